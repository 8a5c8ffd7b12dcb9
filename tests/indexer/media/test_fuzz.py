"""Seeded fuzzing of the decoder: damaged copies of real files either decode or are refused with a
reason, never crash, hang or blow up memory.

The copies are decoded in a child process (this file run as a script), so a hang ends as a
timeout naming the file rather than a stuck suite, and the child's peak memory is its own.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 32
SEED = 20240611
COPIES_PER_SOURCE = 40  # x 12 sources: 480 damaged files
PER_FILE_SECONDS = 3.0
TOTAL_SECONDS = 120  # the child's wall-clock bound; the whole run takes ~3 s here
# A damaged header may claim any size up to the decoder's pixel limit (~179 MP), which it then
# decodes as it would an intact picture that large: the bound is that, not the sources' size.
PEAK_RSS_BYTES = 2 << 30


def _picture(width: int, height: int) -> Image.Image:
    """Gradients, flat blocks and noise, so every codec has real data to damage."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin(x / 9)], axis=-1)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (230, 40, 30)
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _sources() -> dict[str, bytes]:
    """Real files of every format, small ones and ones past the reduced-decode threshold."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    small, large = _picture(96, 64), _picture(260, 200)  # large: short side >= 6 x SIZE
    exif = Image.Exif()
    exif.update({271: "Canon", 272: "EOS", 0x0112: 6})
    exif.get_ifd(0x8769)[36867] = "2021:07:04 15:30:45"
    frames = [small, small.rotate(90), small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    sixteen = Image.fromarray(np.asarray(large.convert("L"), dtype=np.uint16) * 257)
    return {
        "baseline.jpg": _encoded(small, "JPEG", exif=exif, quality=90),
        "progressive.jpg": _encoded(large, "JPEG", exif=exif, progressive=True),
        "rgb.png": _encoded(large, "PNG"),
        "palette.png": _encoded(small.quantize(64), "PNG", transparency=0),
        "gray16.png": _encoded(sixteen, "PNG"),
        "lossy.webp": _encoded(large, "WEBP", exif=exif, quality=80),
        "lossless.webp": _encoded(small, "WEBP", lossless=True),
        "rgb.tif": _encoded(small, "TIFF", exif=exif),
        "packbits.tif": _encoded(large, "TIFF", compression="packbits"),
        "animated.gif": gif.getvalue(),
        "photo.heic": _encoded(small, "HEIF", exif=exif, quality=80),
        "large.heic": _encoded(large, "HEIF", quality=60),
    }


def _damage(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One of four damages: cut short, a few bits flipped, bytes of the header (its first 64
    bytes) or of the metadata that follows it (the first 2 KB) overwritten."""
    kind = ("truncated", "bit-flipped", "header", "metadata")[int(rng.integers(4))]
    if kind == "truncated":
        return kind, data[: int(rng.integers(0, len(data)))]
    copy = bytearray(data)
    if kind == "bit-flipped":
        for _ in range(int(rng.integers(1, 9))):
            spot = int(rng.integers(len(copy)))
            copy[spot] ^= 1 << int(rng.integers(8))
    else:
        reach = min(64 if kind == "header" else 2048, len(copy))
        for _ in range(int(rng.integers(1, 5))):
            copy[int(rng.integers(reach))] = int(rng.integers(256))
    return kind, bytes(copy)


def _write_corpus(folder: Path) -> list[Path]:
    rng = np.random.default_rng(SEED)
    paths = []
    for name, data in _sources().items():
        stem, ext = name.rsplit(".", 1)
        (folder / f"intact {stem}.{ext}").write_bytes(data)
        paths.append(folder / f"intact {stem}.{ext}")
        for i in range(COPIES_PER_SOURCE):
            kind, damaged = _damage(data, rng)
            path = folder / f"{stem} {i:02d} {kind}.{ext}"
            path.write_bytes(damaged)
            paths.append(path)
    return paths


def _decode_all(folder: Path) -> None:
    """The child: decode every file, one JSON line each, flushed before the next starts."""
    from indexer.errors import UnreadableImage
    from indexer.media.decode import decode, read_image

    for path in sorted(folder.iterdir()):
        ext = path.suffix.lstrip(".")
        print(json.dumps({"file": path.name, "outcome": "started"}), flush=True)
        start = time.perf_counter()
        try:
            pixels = decode(read_image(path, ext), ext, SIZE).pixels
            outcome = "decoded" if pixels.shape == (SIZE, SIZE, 3) else f"shape {pixels.shape}"
        except UnreadableImage as e:
            outcome = f"refused: {e}"
        except Exception as e:  # noqa: BLE001 - what the test is looking for
            outcome = f"CRASH {type(e).__name__}: {e}"
        seconds = time.perf_counter() - start
        print(json.dumps({"file": path.name, "outcome": outcome, "seconds": seconds}), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"file": "", "outcome": "peak", "bytes": peak}), flush=True)


def test_damaged_files_decode_or_are_refused_with_a_reason(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif")
    paths = _write_corpus(tmp_path)
    assert len(paths) == 12 * (COPIES_PER_SOURCE + 1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    try:
        child = subprocess.run(
            [sys.executable, __file__, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=TOTAL_SECONDS,
            env=env,
            check=False,
        )
        output = child.stdout
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = [json.loads(line) for line in output.splitlines()][-1:]
        pytest.fail(f"decoding hung; last file started: {last}")
    assert child.returncode == 0, child.stderr[-3000:]
    lines = [json.loads(line) for line in output.splitlines()]
    results = [r for r in lines if r["outcome"] not in ("started", "peak")]
    assert len(results) == len(paths)
    bad = [r for r in results if not r["outcome"].startswith(("decoded", "refused: "))]
    assert not bad, bad[:5]
    assert all(r["outcome"] == "decoded" for r in results if r["file"].startswith("intact"))
    refused = [r for r in results if r["outcome"].startswith("refused")]
    assert all(len(r["outcome"]) > len("refused: ") + 3 for r in refused)  # a reason, each
    assert refused and len(refused) < len(results)  # the damage was real, and survivable
    slow = [r for r in results if r["seconds"] > PER_FILE_SECONDS]
    assert not slow, slow[:5]
    peak = next(r["bytes"] for r in lines if r["outcome"] == "peak")
    assert peak < PEAK_RSS_BYTES, f"peak RSS {peak / 2**20:.0f} MiB"


if __name__ == "__main__":
    _decode_all(Path(sys.argv[1]))
