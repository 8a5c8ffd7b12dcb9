"""Tuning an approximate index at build time: the cheapest search settings that reach a recall
target against exact search, measured on held-out queries drawn from the collection itself.

Exact neighbours come from a chunked brute-force scan over the collection, read by id, so the
full matrix is never in memory. Each query is a collection vector whose own id is left out of
both answers (it would otherwise be a free hit at rank one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

Exact = Callable[[np.ndarray], np.ndarray]  # sorted ids -> their exact vectors [n, dim] float32

TARGET_RECALL = 0.95
K = 10  # recall@10
QUERIES = 200
LATENCY_QUERIES = 32  # timed one at a time, as a user's search runs
SCAN_CHUNK = 65_536
# Up to 64: 4-bit fast-scan codes order a list only roughly (the timing picks among them).
REFINE_FACTORS = (1, 2, 4, 8, 16, 32, 64)
MAX_NPROBE = 4096  # beyond this an inverted file is no faster than a scan
MIN_GAIN = 0.002  # stop probing more lists once recall stops rising by this much
SEED = 0


class Tunable(Protocol):
    """A store whose search settings can be set, and which re-scores with `exact` if given."""

    def set_search(self, nprobe: int, ef_search: int, refine: int) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, *, exact: Exact | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Tuning:
    """Search settings and what they measured on the held-out queries."""

    nprobe: int
    ef_search: int
    refine: int
    recall: float
    latency_ms: float


def held_out(ids: np.ndarray, count: int = QUERIES, seed: int = SEED) -> np.ndarray:
    """A sorted sample of the collection's ids to use as queries."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=min(count, len(ids)), replace=False))


def exact_top(
    read: Exact, ids: np.ndarray, query_ids: np.ndarray, k: int = K, chunk: int = SCAN_CHUNK
) -> np.ndarray:
    """The exact top-k ids [len(query_ids), k] of each query vector over `ids` (ascending),
    its own id left out, by a scan of `chunk` vectors at a time."""
    queries = read(query_ids)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        scores = queries @ read(part).T
        scores[query_ids[:, None] == part[None, :]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(part, scores.shape)], axis=1)
        if all_scores.shape[1] > k:  # the k best, unordered: a partition, not a sort
            keep = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(all_scores, keep, axis=1)
            best_ids = np.take_along_axis(all_ids, keep, axis=1)
        else:
            best_scores, best_ids = all_scores, all_ids
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1)


def without_self(found: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k ids other than its query's own (found holds k+1 per row)."""
    rows = [row[row != own][:k] for row, own in zip(found, query_ids, strict=True)]
    return np.stack(rows)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-k found among the approximate top-k, over all queries."""
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / max(truth.size, 1)


def tune(
    store: Tunable,
    nlist: int,
    hnsw: bool,
    refines: bool,
    read: Exact,
    ids: np.ndarray,
    target: float = TARGET_RECALL,
    chunk: int = SCAN_CHUNK,
) -> Tuning:
    """The settings of lowest single-query latency among those reaching `target` recall@10
    (the best recall found when none does; logged)."""
    query_ids = held_out(ids)
    truth = exact_top(read, ids, query_ids, K, chunk)
    queries = read(query_ids)
    exact = read if refines else None
    reaching: list[tuple[int, int, int, float]] = []
    best = (1, 0, 0, -1.0)
    previous = -1.0
    for nprobe in _powers(min(nlist, MAX_NPROBE)):
        ef = max(2 * nprobe, 16) if hnsw else 0
        recall = -1.0
        for refine in REFINE_FACTORS if refines else (0,):
            store.set_search(nprobe, ef, refine)
            found = without_self(store.search(queries, K + 1, exact=exact)[1], query_ids, K)
            recall = recall_at(found, truth)
            if recall > best[3]:
                best = (nprobe, ef, refine, recall)
            if recall >= target:
                reaching.append((nprobe, ef, refine, recall))
                break
        # Once the target is reached: more lists cost more and buy (almost) nothing. (Before,
        # a flat stretch may be lists too short for k, widened by the search: keep probing.)
        if reaching and (reaching[-1][2] <= REFINE_FACTORS[0] or recall - previous < MIN_GAIN):
            break
        previous = recall
    if not reaching:
        log.warning("no search setting reached recall@%d %.2f; best %.3f", K, target, best[3])
        reaching = [best]
    timed = [(_latency(store, queries, setting, exact), setting) for setting in reaching]
    latency, (nprobe, ef, refine, recall) = min(timed)
    store.set_search(nprobe, ef, refine)
    log.info(
        "tuned: nprobe %d, efSearch %d, refine %d: recall@%d %.3f", nprobe, ef, refine, K, recall
    )
    return Tuning(nprobe, ef, refine, recall, latency)


def _powers(limit: int) -> list[int]:
    values = [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]
    return values if values[-1] == limit else [*values, limit]


def _latency(
    store: Tunable, queries: np.ndarray, setting: tuple[int, int, int, float], exact: Exact | None
) -> float:
    """Median milliseconds of one query at a time, after one warm-up search."""
    store.set_search(*setting[:3])
    store.search(queries[:1], K, exact=exact)
    times = []
    for row in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        store.search(row[None], K, exact=exact)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)
