"""photoseek's read side: query encoding, kNN, filters, rerank, output and the CLI.

The library API in one import: ``from search import Engine, parse_terms``. Names load on first
use, so importing the package (as every CLI command does) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.engine import Engine
    from search.filters import Filters
    from search.hits import Hit
    from search.query import Term, parse_terms

__all__ = ["Engine", "Filters", "Hit", "Term", "parse_terms"]

_HOMES = {
    "Engine": "search.engine",
    "Filters": "search.filters",
    "Hit": "search.hits",
    "Term": "search.query",
    "parse_terms": "search.query",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
