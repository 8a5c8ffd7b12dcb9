"""Where things live: the index directory and the data files shipped with photoseek."""

from __future__ import annotations

import os
from pathlib import Path

TOWERS_DIR = "towers"  # inside an index: the ONNX query encoders exported from its model


def index_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The index directory: the explicit one, else $PHOTOSEEK_INDEX, else the XDG default."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("PHOTOSEEK_INDEX")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(xdg) / "photoseek" / "default"


def cache_dir() -> Path:
    """This user's cache of things derived from models: $XDG_CACHE_HOME/photoseek."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "photoseek"


def data_dir() -> Path:
    """The folder of shipped inputs: model configs, vocabularies, sample images."""
    package = Path(__file__).resolve().parent  # the indexer package
    wheel_copy = package / "_data"  # where the wheel puts the repository's data/
    return wheel_copy if wheel_copy.is_dir() else package.parent / "data"
