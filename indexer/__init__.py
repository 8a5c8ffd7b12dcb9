"""photoseek's write side: discover and decode photos, embed them, keep catalog and vectors.

The library API in one import: ``from indexer import IndexOptions, run_index``. Names load on
first use, so importing the package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indexer.pipeline import IndexOptions, IndexSummary, run_index

__all__ = ["IndexOptions", "IndexSummary", "run_index"]

_HOMES = {
    "IndexOptions": "indexer.pipeline",
    "IndexSummary": "indexer.pipeline",
    "run_index": "indexer.pipeline",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'indexer' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
