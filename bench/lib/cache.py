"""The benchmark cache outside the repository: real photos, random checkpoints, generated sets.

Each `ensure_*` step skips what is already there, so setup runs once per cache directory.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lib import TOOLS
from lib.tables import say
from lib.timing import BenchError, run_child

DEFAULT_CACHE = Path("/work/bench-cache")
ARCH = "ViT-B-32-256"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class Paths:
    """Everything the benchmarks keep in their cache directory."""

    cache: Path

    @property
    def photos(self) -> Path:
        return self.cache / "photos"

    @property
    def photos_done(self) -> Path:
        return self.cache / "photos.complete"

    @property
    def peer(self) -> Path:
        return self.cache / "rclip-peer"

    @property
    def rclip(self) -> Path:
        return self.peer / "venv" / "bin" / "rclip"

    @property
    def rclip_data(self) -> Path:
        return self.peer / "data"

    @property
    def checkpoint(self) -> Path:
        return self.cache / "models" / "vit-b-32-256-random-seed0.pt"

    @property
    def tiny_checkpoint(self) -> Path:
        return self.cache / "models" / "photoseek-tiny-random-seed0.pt"

    @property
    def many(self) -> Path:
        return self.cache / "reindex-10k" / "images"

    @property
    def many_done(self) -> Path:
        return self.cache / "reindex-10k" / "images.complete"

    @property
    def many_index(self) -> Path:
        return self.cache / "reindex-10k" / "index"

    @property
    def many_index_done(self) -> Path:
        return self.cache / "reindex-10k" / "index.complete"

    @property
    def xdg_cache(self) -> Path:
        return self.cache / "xdg-cache"

    @property
    def scratch(self) -> Path:
        return self.cache / "scratch"


def image_files(folder: Path) -> list[Path]:
    """The images under `folder` that both peers index, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def ensure_photos(paths: Paths) -> list[Path]:
    """The 62 real photos from Debian's wallpaper packages, fetched once."""
    if not paths.photos_done.exists():
        _fetch_photos(paths)
    photos = image_files(paths.photos)
    if not photos:
        raise BenchError(f"no photos in {paths.photos}; delete {paths.photos_done} to refetch")
    return photos


def _fetch_photos(paths: Paths) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise BenchError("fetching photos needs apt-get and dpkg (a Debian/Ubuntu machine)")
    say(f"setup: fetching photos into {paths.photos} (about 110 MB from Debian packages)")
    fetch = [TOOLS / "fetch-photos.sh", paths.photos]
    try:
        run_child(fetch, what="fetch-photos.sh")
    except BenchError:
        say("setup: download failed; running apt-get update once and retrying")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        try:
            run_child(fetch, what="fetch-photos.sh")
        except BenchError as e:
            raise BenchError(
                f"could not fetch the photos (apt-get download of Debian wallpaper packages "
                f"failed even after apt-get update; is a Debian mirror reachable?)\n{e}"
            ) from None
    found = image_files(paths.photos)
    if not found:
        raise BenchError(f"fetch-photos.sh put no images in {paths.photos}")
    paths.photos_done.write_text(f"{len(found)}\n")


def ensure_checkpoint(path: Path, arch: str) -> None:
    """Random open_clip weights (seed 0) for `arch`, saved once as a state_dict."""
    if path.exists():
        return
    say(f"setup: saving random {arch} weights (seed 0) to {path}")
    import open_clip
    import torch

    from indexer.models.loading import register_configs

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(path)
