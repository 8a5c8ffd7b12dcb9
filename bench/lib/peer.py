"""The two peers: the rclip 3.3 peer from ../shared/tools/rclip-peer-setup.sh, and photoseek's CLI.

Weights are random on both sides: the numbers compare speed only, never search quality.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lib import TOOLS
from lib.cache import ARCH, Paths, ensure_checkpoint, ensure_photos
from lib.tables import say
from lib.timing import BenchError, run_child

RCLIP_QUERY = "a query"
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def ensure_setup(paths: Paths) -> list[Path]:
    """The photos, the rclip peer and photoseek's random checkpoint; returns the photos."""
    photos = ensure_photos(paths)
    ensure_peer(paths)
    ensure_checkpoint(paths.checkpoint, ARCH)
    return photos


def ensure_peer(paths: Paths) -> None:
    """rclip in its own venv with random ViT-B-32-256 weights exported to ONNX, installed once."""
    visual = paths.rclip_data / RCLIP_MODEL_SUBDIR / "visual.onnx"
    if paths.rclip.exists() and visual.exists():
        return
    say(f"setup: installing the rclip peer into {paths.peer} (pip, then an ONNX export)")
    run_child(
        [TOOLS / "rclip-peer-setup.sh", paths.peer, sys.executable], what="rclip-peer-setup.sh"
    )
    if not (paths.rclip.exists() and visual.exists()):
        raise BenchError(f"rclip-peer-setup.sh finished but {paths.rclip} or {visual} is missing")


def peer_env(paths: Paths) -> dict[str, str]:
    """Offline, and photoseek's per-user caches (its exported ONNX towers) kept in the cache dir."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        RCLIP_DATADIR=str(paths.rclip_data),
        XDG_CACHE_HOME=str(paths.xdg_cache),
    )
    env.pop("PHOTOSEEK_INDEX", None)
    return env


def photoseek_bin() -> Path:
    found = Path(sys.executable).parent / "photoseek"
    if not found.exists():
        raise BenchError(f"no photoseek CLI beside {sys.executable}; install the project first")
    return found


def photoseek_index_cmd(paths: Paths, index: Path) -> list[str | os.PathLike[str]]:
    """`photoseek index` of the photos into `index` with the random ViT-B-32-256 checkpoint."""
    model = f"{ARCH}:{paths.checkpoint}"
    return [photoseek_bin(), "index", paths.photos, "--index", index, "--model", model, "--json"]


def rclip_cmd(paths: Paths, *, no_indexing: bool = False) -> list[str | os.PathLike[str]]:
    """An rclip query (run in the photos folder); it indexes that folder first unless told not."""
    return [paths.rclip, *(["-n"] if no_indexing else []), "-t", "10", RCLIP_QUERY]
