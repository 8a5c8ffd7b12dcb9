"""The one call every reranker answers, so the engine never knows which backend it holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from search.hits import Hit

# catalog ids -> each image's stored ITM tokens (`Catalog.tokens_by_id`); the index model's own
# head reads them, cross-encoders read the candidates' files instead.
TokensById = Callable[[list[int]], dict[int, np.ndarray]]


class Reranker(Protocol):
    """Rescores a query's candidates; the contract is stated in `search.rerank.head`."""

    def rerank(self, tokens_by_id: TokensById, text: str, hits: list[Hit]) -> list[Hit]:
        """All of `hits` rescored against `text`, best fused score first, with the rerank
        fields in `Hit.extra`; the caller keeps the best k."""
        ...
