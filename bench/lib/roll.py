"""A camera roll: a folder shaped like a phone's photo library, made from the shared photos.

The wallpaper folder is mostly large PNG/WebP, which no codec decodes at reduced size; a real
library is mostly camera JPEGs and phone HEICs. Of every 20 files here, 15 are 12 MP (4000x3000)
baseline 4:2:0 JPEGs at quality 92 with EXIF (date taken, camera make and model, orientation:
mostly upright, some turned 90, 270 or 180 degrees), 3 are 12 MP HEICs (pillow-heif's x265) from
iPhones, and 2 are 2560x1440 PNG screenshots of a photo viewer.

Each file is its own crop of one of the photos, so no two share bytes (checked). The photos get
sensor-like noise: upscaled wallpapers are smoother than camera output, and without it a 12 MP
JPEG is a third of a camera's size and decodes faster than a camera's would. Deterministic for
a seed; generated once per (seed, count) into the cache, on all cores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

from lib.cache import Paths
from lib.tables import say
from lib.timing import BenchError

VERSION = 1  # bump when what a file looks like changes: a new version is a new folder
PATTERN = "JJJHJJJPJJJHJJJJPJJH"  # kinds of 20 consecutive files: 15 JPEG, 3 HEIC, 2 PNG
PHOTO_SIZE, SCREEN_SIZE = (4000, 3000), (2560, 1440)
JPEG_QUALITY, HEIC_QUALITY = 92, 60  # HEIC 60: about 2 MB at 12 MP, like an iPhone's
NOISE_SIGMA = {"jpeg": 4.0, "heic": 2.0}  # luma noise; camera HEICs are smoother (denoised)
ORIENTATIONS, ORIENTATION_WEIGHTS = (1, 6, 8, 3), (0.6, 0.25, 0.1, 0.05)
JPEG_CAMERAS = (
    ("Google", "Pixel 6a"),
    ("samsung", "SM-G991B"),
    ("Xiaomi", "2201123G"),
    ("OnePlus", "LE2113"),
    ("Apple", "iPhone XR"),
)
HEIC_CAMERAS = (("Apple", "iPhone 12"), ("Apple", "iPhone 13 mini"), ("Apple", "iPhone 15 Pro"))
_NOISE_MARGIN = 64
_EXIF_IFD, _MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x8769, 271, 272, 274, 306
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 36867, 36868


@dataclass(frozen=True)
class Shot:
    """One file of the roll: what it is, where it goes, and the crop of its source photo."""

    index: int
    kind: str  # jpeg, heic or png
    name: str  # relative to the roll folder
    crop: tuple[float, float, float]  # window scale (of the largest), x and y offset fractions
    noise_offset: tuple[int, int]
    taken: str  # EXIF "YYYY:MM:DD HH:MM:SS"
    make: str
    model: str
    orientation: int
    theme: int  # screenshots: which colours the viewer is drawn in


@dataclass(frozen=True)
class Roll:
    """A generated camera roll: its folder, its files (sorted) and what they are."""

    folder: Path
    files: list[Path]
    manifest: dict


@dataclass(frozen=True)
class RollPaths(Paths):
    """The cache's paths, with the camera roll as the folder both peers index."""

    roll: Path

    @property
    def photos(self) -> Path:
        return self.roll


def ensure_roll(paths: Paths, sources: list[Path], count: int, seed: int = 0) -> Roll:
    """The roll of `count` files for `seed`, generated on first use and reused after."""
    folder = paths.cache / "camera-roll" / f"v{VERSION}-seed{seed}-{count}"
    manifest_file = folder.with_suffix(".json")
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        files = [folder / name for name in manifest["names"]]
        if all(f.is_file() for f in files):
            return Roll(folder, files, manifest)
    manifest = generate(folder, sources, count, seed)
    manifest_file.write_text(json.dumps(manifest, indent=1) + "\n")
    return Roll(folder, [folder / name for name in manifest["names"]], manifest)


def generate(folder: Path, sources: list[Path], count: int, seed: int) -> dict:
    """Write the roll into `folder` (replaced whole), one process per core; returns its manifest."""
    import numpy as np

    if not sources:
        raise BenchError("no source photos to make a camera roll from")
    say(f"setup: generating a camera roll of {count} files into {folder}")
    started = time.perf_counter()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    order = np.random.default_rng(seed).permutation(len(sources))
    by_source: dict[Path, list[Shot]] = defaultdict(list)
    for i in range(count):
        by_source[sources[order[i % len(sources)]]].append(plan_shot(seed, i))
    tasks = sorted(by_source.items(), key=lambda t: -len(t[1]))  # the longest first
    # spawn, not fork: the parent may hold torch's thread pool, which a fork does not carry
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=get_context("spawn")) as pool:
        sources_of, shots_of = [source for source, _ in tasks], [shots for _, shots in tasks]
        done = pool.map(_write_shots, repeat(partial), repeat(seed), sources_of, shots_of)
        written = [item for items in done for item in items]
    _check_distinct(partial, [name for name, _ in written])
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return _manifest(written, seed, len(sources), time.perf_counter() - started)


def plan_shot(seed: int, index: int) -> Shot:
    """File `index` of the roll: its kind from PATTERN, the rest drawn from (seed, index)."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    kind = {"J": "jpeg", "H": "heic", "P": "png"}[PATTERN[index % len(PATTERN)]]
    # 5 h apart plus up to 4 h: dates increase with the index and never repeat
    taken = datetime(2023, 4, 1, 8) + timedelta(hours=5 * index, minutes=int(rng.integers(240)))
    make, model = (HEIC_CAMERAS if kind == "heic" else JPEG_CAMERAS)[
        int(rng.integers(len(HEIC_CAMERAS if kind == "heic" else JPEG_CAMERAS)))
    ]
    if kind == "png":
        name = f"Screenshots/Screenshot {taken:%Y-%m-%d at %H.%M.%S}.png"
    else:
        suffix = "JPG" if kind == "jpeg" else "HEIC"
        name = f"DCIM/{100 + index // 200}PHONE/IMG_{index:04d}.{suffix}"
    return Shot(
        index=index,
        kind=kind,
        name=name,
        crop=(float(rng.uniform(0.6, 1.0)), float(rng.uniform()), float(rng.uniform())),
        noise_offset=(int(rng.integers(_NOISE_MARGIN)), int(rng.integers(_NOISE_MARGIN))),
        taken=f"{taken:%Y:%m:%d %H:%M:%S}",
        make=make,
        model=model,
        orientation=int(rng.choice(ORIENTATIONS, p=ORIENTATION_WEIGHTS)),
        theme=int(rng.integers(len(_THEMES))),
    )


def _write_shots(
    folder: Path, seed: int, source: Path, shots: list[Shot]
) -> list[tuple[str, dict]]:
    """In a worker: open `source` once, write each of its shots; (name, facts) for each."""
    from PIL import Image

    with Image.open(source) as opened:
        photo = opened.convert("RGB")
    written = []
    for shot in shots:
        target = folder / shot.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if shot.kind == "png":
            _screenshot(photo, shot).save(target, "PNG")
        else:
            _save_photo(_camera_pixels(photo, shot, seed), shot, target)
        facts = {"kind": shot.kind, "bytes": target.stat().st_size, "source": source.name}
        written.append((shot.name, facts | asdict(shot)))
    return written


def _crop_box(size: tuple[int, int], aspect: float, crop: tuple[float, float, float]) -> tuple:
    """A window of `aspect` (w/h) inside an image of `size`: `crop` scales the largest one and
    places it by fractions of the free space."""
    width, height = size
    w, h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    scale, fx, fy = crop
    w, h = w * scale, h * scale
    left, top = fx * (width - w), fy * (height - h)
    return (left, top, left + w, top + h)


def _camera_pixels(photo, shot: Shot, seed: int):  # noqa: ANN001, ANN202 - PIL images
    """A 12 MP crop of `photo` with sensor-like luma noise (the same field per seed, shifted)."""
    import numpy as np
    from PIL import Image

    width, height = PHOTO_SIZE
    box = _crop_box(photo.size, width / height, shot.crop)
    pixels = np.asarray(photo.resize(PHOTO_SIZE, Image.Resampling.BILINEAR, box=box), np.int16)
    dy, dx = shot.noise_offset
    noise = _noise_field(seed, NOISE_SIGMA[shot.kind])[dy : dy + height, dx : dx + width, None]
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


@functools.cache
def _noise_field(seed: int, sigma: float):  # noqa: ANN202 - a numpy array
    """Gaussian noise a little larger than a photo, drawn once per worker and kind."""
    import numpy as np

    width, height = PHOTO_SIZE
    shape = (height + _NOISE_MARGIN, width + _NOISE_MARGIN)
    rng = np.random.default_rng([seed, int(sigma * 1000)])
    return np.rint(rng.normal(0.0, sigma, shape)).astype(np.int16)


def _save_photo(image, shot: Shot, target: Path) -> None:  # noqa: ANN001 - a PIL image
    from PIL import Image

    exif = Image.Exif()
    exif[_MAKE], exif[_MODEL], exif[_ORIENTATION] = shot.make, shot.model, shot.orientation
    exif[_DATETIME] = shot.taken
    details = exif.get_ifd(_EXIF_IFD)
    details[_DATETIME_ORIGINAL] = details[_DATETIME_DIGITIZED] = shot.taken
    if shot.kind == "jpeg":
        image.save(target, "JPEG", quality=JPEG_QUALITY, subsampling=2, exif=exif.tobytes())
        return
    from pillow_heif import register_heif_opener

    register_heif_opener()
    # x265's "ultrafast" keeps generation to seconds a file (its default takes ~40 s at 12 MP);
    # decoding, which is what the benchmark times, reads any preset's stream the same way.
    params = {"preset": "ultrafast"}
    image.save(target, "HEIF", quality=HEIC_QUALITY, exif=exif.tobytes(), enc_params=params)


# Screenshot themes: window background, panels, text lines, accent.
_THEMES = (
    ((250, 250, 250), (236, 236, 240), (120, 120, 130), (10, 132, 255)),
    ((30, 30, 32), (44, 44, 48), (160, 160, 168), (255, 159, 10)),
    ((255, 255, 255), (242, 242, 247), (60, 60, 67), (52, 199, 89)),
)


def _screenshot(photo, shot: Shot):  # noqa: ANN001, ANN202 - PIL images
    """A 2560x1440 screenshot of a photo viewer: flat panels, lines of "text", the photo."""
    import numpy as np
    from PIL import Image, ImageDraw

    background, panel, text, accent = _THEMES[shot.theme]
    width, height = SCREEN_SIZE
    screen = Image.new("RGB", SCREEN_SIZE, background)
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, width, 52), fill=panel)
    draw.rectangle((0, 52, 360, height), fill=panel)
    rng = np.random.default_rng(shot.index)
    for row in range(24):  # the sidebar's entries, one highlighted
        y = 90 + row * 52
        length = int(rng.integers(120, 300))
        fill = accent if row == shot.index % 24 else text
        draw.rounded_rectangle((32, y, 32 + length, y + 14), radius=6, fill=fill)
    view = (400, 92, width - 40, height - 120)
    box = _crop_box(photo.size, (view[2] - view[0]) / (view[3] - view[1]), shot.crop)
    screen.paste(photo.resize((view[2] - view[0], view[3] - view[1]), box=box), view[:2])
    draw.rounded_rectangle((400, height - 80, 1100, height - 60), radius=8, fill=text)
    return screen


def _check_distinct(folder: Path, names: list[str]) -> None:
    seen: dict[bytes, str] = {}
    for name in names:
        digest = hashlib.blake2b((folder / name).read_bytes(), digest_size=16).digest()
        if digest in seen:
            raise BenchError(f"camera roll: {name} has the same bytes as {seen[digest]}")
        seen[digest] = name


def _manifest(written: list[tuple[str, dict]], seed: int, sources: int, seconds: float) -> dict:
    written.sort(key=lambda item: item[1]["index"])
    sizes: dict[str, list[int]] = defaultdict(list)
    for _, facts in written:
        sizes[facts["kind"]].append(facts["bytes"])
    return {
        "version": VERSION,
        "seed": seed,
        "files": len(written),
        "source_photos": sources,
        "generation_seconds": round(seconds, 1),
        "by_kind": {
            kind: {
                "files": len(found),
                "megabytes": round(sum(found) / 1e6, 1),
                "median_megabytes": round(statistics.median(found) / 1e6, 2),
            }
            for kind, found in sorted(sizes.items())
        },
        "names": sorted(name for name, _ in written),
        "shots": {name: facts for name, facts in written},
    }
