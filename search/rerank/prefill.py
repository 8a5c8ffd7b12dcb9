"""`photoseek index --rerank-cache SPEC`: fill a reranker's vision cache ahead of queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.errors import BadInput
from indexer.store.index_dir import open_existing
from search.hits import Hit
from search.rerank.cross_encoder import read_candidate
from search.rerank.kinds import open_reranker


@dataclass(frozen=True)
class Prefilled:
    """What one fill did: images cached now, found cached, unreadable; bytes per image."""

    computed: int
    cached: int
    unreadable: int
    bytes_per_image: int
    bytes_used: int


def fill_vision_cache(index_dir: Path, spec: str, cache_bytes: int | None = None) -> Prefilled:
    """Compute and store the vision output of every live image of the index for `spec`."""
    opened = open_reranker(spec, index_dir, cache_bytes)
    reranker, cache = opened.reranker, opened.reranker.cache
    if cache is None:
        raise BadInput(f"--rerank-cache {spec}: this reranker runs per pair; nothing to cache")
    catalog = open_existing(index_dir)
    try:
        ids = [int(i) for i in catalog.live_ids()]
        rows = catalog.rows_by_id(ids)
    finally:
        catalog.close()
    computed = cached = unreadable = 0
    sizes: list[int] = []
    batch = reranker.scorer.batch
    for start in range(0, len(ids), batch):
        hits = [Hit(i, rows[i].path, 0.0, None, None, None) for i in ids[start : start + batch]]
        candidates = [c for c in map(read_candidate, hits) if c is not None]
        fresh = [c for c in candidates if cache.get(c.digest) is None]
        _, kept = reranker.vision(fresh)
        computed += len(kept)
        cached += len(candidates) - len(fresh)
        unreadable += len(hits) - len(candidates) + len(fresh) - len(kept)
        sizes += [cache.entry_bytes(c.digest) for c in kept]
    per_image = max(sizes) if sizes else 0
    return Prefilled(computed, cached, unreadable, per_image, cache.bytes_used())
