"""A reader's view of the vectors: the vector file plus what the catalog committed since.

The indexer commits batch by batch and saves the vector file at the end of a run, so while it
runs (or after it was killed) the file lags behind the catalog. A reader must neither wait for it
nor rebuild it (that trains, writes, and races the writer): it searches the file as it is,
leaves out the ids no longer live, and scans the rows the file lacks exactly, straight from the
catalog. The catalog's generation says when any of that is needed at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from indexer.store.vector_store import VectorStore

if TYPE_CHECKING:  # either reads the same: a cold query's reader never imports SQLAlchemy
    from indexer.store.catalog import Catalog
    from indexer.store.reader import CatalogReader


class LiveVectors:
    """Searches `store` as of the catalog now: never trains, never writes."""

    def __init__(self, store: VectorStore, catalog: Catalog | CatalogReader) -> None:
        self.store = store
        self.catalog = catalog
        self._generation: int | None = None  # the catalog generation the delta below reflects
        self._file_ids: np.ndarray | None = None  # the file never changes under a view
        self.stale = np.empty(0, dtype=np.int64)  # in the file, no longer live
        self.delta_ids = np.empty(0, dtype=np.int64)  # live, not in the file
        self._delta_vectors = np.empty((0, store.dim), dtype=np.float32)

    def refresh(self) -> None:
        """Bring the delta in line with the catalog's generation (one meta read when current)."""
        generation = self.catalog.generation()
        if generation == self._generation:
            return
        if generation == self.store.generation:
            stale, missing = np.empty(0, np.int64), np.empty(0, np.int64)
        else:
            # The generation first: rows read after it are at least that new, so a commit in
            # between is seen now or at the next refresh, never lost.
            live = self.catalog.live_ids()
            if self._file_ids is None:
                self._file_ids = self.store.ids()
            stale = np.setdiff1d(self._file_ids, live, assume_unique=True)
            missing = np.setdiff1d(live, self._file_ids, assume_unique=True)
        self._load_delta(missing)
        self.stale, self._generation = stale, generation

    def _load_delta(self, missing: np.ndarray) -> None:
        """Keep the delta vectors already read that are still missing; read only the others."""
        kept = np.isin(self.delta_ids, missing)
        new = np.setdiff1d(missing, self.delta_ids[kept], assume_unique=True)
        ids = np.concatenate([self.delta_ids[kept], new])
        vectors = np.concatenate(
            [self._delta_vectors[kept], self.catalog.vectors(new, self.store.dim)]
        )
        order = np.argsort(ids, kind="stable")
        self.delta_ids, self._delta_vectors = ids[order], vectors[order]

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row among the live ids (and `allowed`, if given)."""
        self.refresh()
        scores, ids = self.store.search(
            queries, k, allowed, excluded=self.stale, exact=self._exact_vectors
        )
        if not len(self.delta_ids):
            return scores, ids
        delta_ids, vectors = self.delta_ids, self._delta_vectors
        if allowed is not None:
            picked = np.isin(delta_ids, allowed)
            delta_ids, vectors = delta_ids[picked], vectors[picked]
        delta_scores = np.ascontiguousarray(queries, np.float32) @ vectors.T
        return _merge(scores, ids, delta_scores, np.broadcast_to(delta_ids, delta_scores.shape), k)

    def _exact_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The catalog's vectors of ids the file holds: a PQ file's shortlist is re-scored with
        them, so its scores are exact and merge with the delta's."""
        return self.catalog.vectors(ids, self.store.dim)


def _merge(
    scores: np.ndarray, ids: np.ndarray, more_scores: np.ndarray, more_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best k per row of two result sets (ids -1 and their scores stay last)."""
    all_scores = np.concatenate([np.where(ids >= 0, scores, -np.inf), more_scores], axis=1)
    all_ids = np.concatenate([ids, more_ids], axis=1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    top_ids = np.where(np.isfinite(top_scores), top_ids, -1)
    if top_ids.shape[1] < k:  # fewer than k in both together
        pad = k - top_ids.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, top_ids.astype(np.int64)
