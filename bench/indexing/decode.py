"""Part 2a: decode-only throughput on the photos, photoseek's decoder against Pillow's."""

from __future__ import annotations

import io
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lib.timing import QuietGate, interleaved, median


def bench_decode(photos: list[Path], runs: int, gate: QuietGate) -> dict:
    from PIL import Image

    from indexer.media import decode as decoding

    files = [(p.read_bytes(), p.suffix.lower().lstrip("."), p.suffix.lower()) for p in photos]
    per_format: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def ours_single() -> None:
        for data, ext, suffix in files:
            started = time.perf_counter()
            decoding.decode(data, ext, 256)
            per_format["photoseek_decode_1_thread"][suffix].append(time.perf_counter() - started)

    def ours_threads() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda f: decoding.decode(f[0], f[1], 256), files))

    def pillow_full() -> None:
        for data, _, suffix in files:
            started = time.perf_counter()
            with Image.open(io.BytesIO(data)) as image:
                image.convert("RGB")
            per_format["pillow_full_decode_1_thread"][suffix].append(time.perf_counter() - started)

    variants = {
        "photoseek_decode_1_thread": ours_single,
        "photoseek_decode_2_threads": ours_threads,
        "pillow_full_decode_1_thread": pillow_full,
    }
    times = interleaved(variants, runs, "decode", gate)
    result: dict = {
        name: {"seconds": t, "images_per_s": len(files) / median(t)} for name, t in times.items()
    }
    for name, by_suffix in per_format.items():
        result[name]["by_format_ms_per_image"] = {
            suffix: round(1000 * statistics.fmean(v), 1) for suffix, v in sorted(by_suffix.items())
        }
    result["formats"] = dict(Counter(suffix for _, _, suffix in files))
    return result
