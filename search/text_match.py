"""`search --text-match`: keyword hits on captions and names, fused with the vector ranking.

The keyword ranking (FTS5's BM25 on SQLite, ts_rank on PostgreSQL; `indexer.store.keywords`)
and the vector ranking are fused by reciprocal rank fusion (Cormack, Clarke and Büttcher,
SIGIR 2009): an image's fused score is the sum, over the rankings that hold it, of
1 / (RRF_K + its rank there), rank 1 being the best and RRF_K = 60 as in the paper. Ranks, not
scores, are fused: a cosine and a BM25 value share no scale. Each ranking is read to
`depth(k)` images, under the same filters; an image in neither is not a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from indexer.errors import BadInput
from indexer.store.layout import OFFLINE, OK
from search.filters import Filters
from search.hits import Hit

if TYPE_CHECKING:
    from indexer.store.catalog import Catalog
    from indexer.store.reader import CatalogReader

RRF_K = 60
DEPTH = 100  # each ranking's images read before fusing (k, when k is more)


def depth(k: int) -> int:
    """How deep each ranking is read for k fused results."""
    if k <= 0:
        raise BadInput(f"k must be at least 1, got {k}")
    return max(k, DEPTH)


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Ids by fused score 1/(k + rank) summed over `rankings`, best first; a tie keeps the
    order of first appearance (the first ranking's before the next's)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def fuse_with_keywords(
    catalog: Catalog | CatalogReader,
    by_vector: list[Hit],
    text: str,
    filters: Filters | None,
    k: int,
) -> list[Hit]:
    """The k best of `by_vector` (a vector ranking under `filters`) and the keyword ranking of
    `text` under the same filters, by RRF. Each hit's score is its fused score; `extra` says
    its `vector_rank` and `cosine`, and its `text_rank`, for the rankings that hold it."""
    from indexer.store.catalog import Catalog  # SQLAlchemy: never on a plain cold query
    from indexer.store.keywords import keyword_ranking

    if not isinstance(catalog, Catalog):
        raise TypeError("text match needs the full catalog: open the engine without light=True")
    filters = filters or Filters()
    statuses = (OK, OFFLINE) if filters.include_offline else (OK,)
    allowed = None
    if filters.active():
        allowed = {*filters.allowed_ids(catalog).tolist(), *filters.offline_ids(catalog).tolist()}
    dialect = catalog.target.dialect
    by_text = keyword_ranking(catalog.engine, dialect, text, statuses, depth(k), allowed)
    fused = rrf([[hit.id for hit in by_vector], by_text])[:k]
    vector_rank = {hit.id: (rank, hit) for rank, hit in enumerate(by_vector, 1)}
    text_rank = {image_id: rank for rank, image_id in enumerate(by_text, 1)}
    only_text = [image_id for image_id, _ in fused if image_id not in vector_rank]
    rows, captions = catalog.rows_by_id(only_text), catalog.captions_by_id(only_text)
    hits: list[Hit] = []
    for image_id, score in fused:
        extra: dict[str, float] = {}
        if image_id in vector_rank:
            rank, hit = vector_rank[image_id]
            extra |= {**hit.extra, "cosine": hit.score, "vector_rank": rank}
        elif image_id in rows:  # else deleted since it was ranked
            hit = Hit.from_row(rows[image_id], 0.0, captions.get(image_id))
        else:
            continue
        if image_id in text_rank:
            extra["text_rank"] = text_rank[image_id]
        hits.append(replace(hit, score=score, extra=extra))
    return hits
