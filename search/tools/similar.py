"""Find similar: the images nearest to an indexed one, from its stored vector (no decoding)."""

from __future__ import annotations

import numpy as np

from indexer.store.catalog import ImageRow
from search.engine import Engine
from search.filters import Filters
from search.hits import Hit


def similar(
    engine: Engine, row: ImageRow, k: int = 10, filters: Filters | None = None
) -> list[Hit]:
    """The k images most like the live image `row`, best first, without the image itself."""
    vector = engine.catalog.vectors(np.array([row.id], dtype=np.int64), engine.record.dim)[0]
    hits = engine.search_vector(vector, k + 1, filters)
    return [hit for hit in hits if hit.id != row.id][:k]
