"""Installing query towers into an index: from the per-user export cache, exporting on a miss.

Exporting a ViT-B-32 takes seconds, so exports are cached under $XDG_CACHE_HOME/photoseek/towers,
keyed by the model's identity; each index gets its own copy (hard links where possible), so an
index directory stays self-contained and portable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from indexer.locations import TOWERS_DIR, cache_dir
from indexer.models.fingerprints import cache_key
from indexer.models.loading import LoadedModel, ModelIdentity
from indexer.towers.spec import FORMAT_VERSION, towers_ready


def cache_root() -> Path:
    return cache_dir() / "towers"


def install_towers(
    directory: Path, identity: ModelIdentity, load: Callable[[], LoadedModel]
) -> bool:
    """Give the index its ONNX towers unless it has them; `load` is called only on a cache miss.

    Returns whether anything was installed.
    """
    target = directory / TOWERS_DIR
    if towers_ready(target):
        return False
    cached = cache_root() / cache_key(FORMAT_VERSION, identity.architecture, identity.weights)
    if not towers_ready(cached):
        from indexer.towers.export import export_towers  # imports torch: only when exporting

        loaded = load()
        export_towers(loaded.model, cached, loaded.head, loaded.head_alpha)
    staging = directory / f"{TOWERS_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(cached, staging, copy_function=_link_or_copy)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier copy
    os.replace(staging, target)
    return True


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
