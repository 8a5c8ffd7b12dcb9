"""The stages that bound any indexer on a folder: decoding on every core, and the matmul ceiling
in the precision photoseek's image tower ran in."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lib.cache import ARCH, Paths
from lib.gemm import CEILING_PRECISIONS, GemmSuite, vit_gflops_per_image
from lib.peer import peer_env, photoseek_bin
from lib.timing import QuietGate, interleaved, median, run_child

from indexing.model import BATCH


def bench_decode_all_cores(files: list[Path], runs: int, gate: QuietGate) -> dict:
    """photoseek's decoder at the model's input size, on one thread and on every core (the
    files read into memory first: this is decoding alone)."""
    import open_clip

    from indexer.media import decode as decoding

    size = open_clip.get_model_config(ARCH)["vision_cfg"]["image_size"]
    data = [(p.read_bytes(), p.suffix.lower().lstrip(".")) for p in files]
    cores = os.cpu_count() or 1
    per_format: dict[str, list[float]] = defaultdict(list)

    def one_thread() -> None:
        for raw, ext in data:
            started = time.perf_counter()
            decoding.decode(raw, ext, size)
            per_format[ext].append(time.perf_counter() - started)

    def all_cores() -> None:
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(lambda f: decoding.decode(f[0], f[1], size), data))

    variants = {"photoseek_decode_1_thread": one_thread, "photoseek_decode_all_cores": all_cores}
    times = interleaved(variants, runs, "decode", gate)
    result: dict = {"size": size, "threads_all_cores": cores}
    for name, t in times.items():
        result[name] = {"seconds": t, "images_per_s": len(data) / median(t)}
    result["photoseek_decode_1_thread"]["by_format_ms_per_image"] = {
        ext: round(1000 * statistics.fmean(v), 1) for ext, v in sorted(per_format.items())
    }
    return result


def bench_ceiling(precision: str, runs: int, gate: QuietGate) -> dict:
    """The image tower's images/s if it ran at the best GEMM rate of `precision` on this CPU."""
    import torch

    flops = vit_gflops_per_image(ARCH)
    measured = precision if precision in CEILING_PRECISIONS else "fp32"
    gemms = GemmSuite(flops["tokens"] * BATCH, flops["width"], precision=measured)
    gemms()  # warm-up: oneDNN primitives, allocator
    interleaved({f"{measured} GEMMs": gemms}, max(runs, 3), f"batch {BATCH}", gate)
    report = gemms.report()
    rate = report[f"{measured}_gflop_per_s"]
    return {
        "precision": measured,
        "torch_threads": torch.get_num_threads(),
        "flops": flops,
        "matmul": report,
        "ceiling_images_per_s": rate / flops["gflops"],
    }


def photoseek_embedder(paths: Paths, index: Path) -> dict:
    """The precision and engine photoseek's image tower ran in for `index`: as `photoseek status`
    reports its last run, else what `--precision auto` resolves to on this CPU."""
    status = run_child(
        [photoseek_bin(), "status", "--index", index, "--json"],
        env=peer_env(paths),
        what="photoseek status",
    )
    embedder = json.loads(status.stdout).get("embedder")
    if isinstance(embedder, dict) and embedder.get("precision"):
        return embedder | {"source": "photoseek status"}
    from indexer.models.precision import resolve_precision

    return {"precision": resolve_precision("auto", "cpu"), "engine": "torch", "source": "auto"}
