"""Tuning an approximate index at build time: the cheapest search settings that reach a recall
target against exact search, measured on held-out queries drawn from the collection itself.

Exact neighbours come from a chunked brute-force scan over the collection, read by id, so the
full matrix is never in memory. Each query is a collection vector whose own id is left out of
both answers (it would otherwise be a free hit at rank one).

A setting reaches the target when its measured recall, less CONFIDENCE_Z standard errors of that
measurement, does: held-out queries are a sample, and the first setting whose sample clears the
line is the one most likely to have been lucky. On bench/vector_scale.py's 10M index the tuner
stopped at a setting (nprobe 512, refine 64) whose 200 held-out queries scored 0.951, and 200
fresh queries 0.9365; 1,000 of each scored 0.933 and 0.933 there (0.955 and 0.953 at nprobe
1,024, refine 32): drawn from the same collection, held-out and fresh queries score alike, and
the gap was the estimate's error (about 0.007 on 200 queries) picked at its luckiest.
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
Setting = tuple[int, int, int, float, float]  # nprobe, efSearch, refine, recall, its error

TARGET_RECALL = 0.95
K = 10  # recall@10
# Held-out queries: recall@10's standard error is about 0.0035 on 500 near 0.96 (0.007 on 200),
# and the exact scan they need grows with them (tuning the 10M index: 209-292 s at load 2-4).
QUERIES = 500
# Standard errors the measured recall must clear the target by: one-sided 95 % confidence that
# a setting's recall on queries like these is at least the target.
CONFIDENCE_Z = 1.645
LATENCY_QUERIES = 32  # timed one at a time, as a user's search runs
SCAN_CHUNK = 65_536
# Up to 64: 4-bit fast-scan codes order a list only roughly (the timing picks among them).
REFINE_FACTORS = (1, 2, 4, 8, 16, 32, 64)
MAX_NPROBE = 4096  # beyond this an inverted file is no faster than a scan
MIN_GAIN = 0.002  # stop probing more lists once recall stops rising by this much
# Halvings of the octave between the most lists that fell short and the fewest (a power of two)
# that reached: two more measurements leave at most a quarter more lists than needed. On the 10M
# index, 896 lists reached where the powers of two probed 1,024.
BISECTIONS = 2
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
    recall_se: float = 0.0  # the standard error of `recall`, over the held-out queries


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
    return recall_and_error(found, truth)[0]


def recall_and_error(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """recall@k over all queries (`recall_at`) and its standard error: the spread of each
    query's own recall over the square root of their number (0 for fewer than two queries)."""
    if not truth.size:
        return 0.0, 0.0
    each = np.array(
        [len(np.intersect1d(f[f >= 0], t)) / len(t) for f, t in zip(found, truth, strict=True)]
    )
    error = float(each.std(ddof=1) / np.sqrt(len(each))) if len(each) > 1 else 0.0
    return float(each.mean()), error


def tune(
    store: Tunable,
    nlist: int,
    hnsw: bool,
    refines: bool,
    read: Exact,
    ids: np.ndarray,
    target: float = TARGET_RECALL,
    chunk: int = SCAN_CHUNK,
    confidence_z: float = CONFIDENCE_Z,
) -> Tuning:
    """The settings of lowest single-query latency among those whose recall@10 reaches `target`
    by `confidence_z` standard errors (the best recall found when none does; logged)."""
    query_ids = held_out(ids)
    truth = exact_top(read, ids, query_ids, K, chunk)
    queries = read(query_ids)
    exact = read if refines else None

    def clears(setting: Setting) -> bool:
        return setting[3] - confidence_z * setting[4] >= target

    trial = _Trial(store, queries, query_ids, truth, exact, hnsw, refines, clears)
    tried: list[Setting] = []
    short, previous = 0, -1.0  # the most lists that fell short, below the fewest that reached
    for nprobe in _powers(min(nlist, MAX_NPROBE)):
        tried += trial.at(nprobe)
        recall = tried[-1][3]
        reaching = [setting for setting in tried if clears(setting)]
        if not reaching:
            short = nprobe
        # Once the target is reached: more lists cost more and buy (almost) nothing. (Before,
        # a flat stretch may be lists too short for k, widened by the search: keep probing.)
        elif reaching[-1][2] <= REFINE_FACTORS[0] or recall - previous < MIN_GAIN:
            break
        previous = recall
    reaching = _fewer_lists(trial, [setting for setting in tried if clears(setting)], short)
    if not reaching:
        best = max(tried, key=lambda setting: setting[3])
        log.warning("no search setting reached recall@%d %.2f; best %.3f", K, target, best[3])
        reaching = [best]
    # Fewer lists and as short a shortlist cannot be slower: only the others need timing.
    timed = [(_latency(store, queries, setting, exact), setting) for setting in _cheapest(reaching)]
    latency, (nprobe, ef, refine, recall, error) = min(timed)
    store.set_search(nprobe, ef, refine)
    log.info("tuned: nprobe %d, efSearch %d, refine %d", nprobe, ef, refine)
    log.info("recall@%d %.4f, standard error %.4f", K, recall, error)
    return Tuning(nprobe, ef, refine, recall, latency, error)


@dataclass(frozen=True)
class _Trial:
    """Settings measured on the held-out queries against their exact neighbours."""

    store: Tunable
    queries: np.ndarray
    query_ids: np.ndarray
    truth: np.ndarray
    exact: Exact | None
    hnsw: bool
    refines: bool
    clears: Callable[[Setting], bool]  # whether a measured setting reaches the target

    def at(self, nprobe: int) -> list[Setting]:
        """Each shortlist tried at `nprobe` lists, shortest first, up to the first that reaches."""
        ef = max(2 * nprobe, 16) if self.hnsw else 0
        tried: list[Setting] = []
        for refine in REFINE_FACTORS if self.refines else (0,):
            self.store.set_search(nprobe, ef, refine)
            found = self.store.search(self.queries, K + 1, exact=self.exact)[1]
            measured = recall_and_error(without_self(found, self.query_ids, K), self.truth)
            tried.append((nprobe, ef, refine, *measured))
            if self.clears(tried[-1]):
                break
        return tried


def _fewer_lists(trial: _Trial, reaching: list[Setting], short: int) -> list[Setting]:
    """`reaching` and what reaches the target with fewer lists, found by halving the gap between
    the most lists that fell short and the fewest that reached, BISECTIONS times: powers of two
    alone may probe twice the lists needed."""
    if not reaching:
        return reaching
    found, enough = list(reaching), min(setting[0] for setting in reaching)
    for _ in range(BISECTIONS):
        middle = (short + enough) // 2
        if not short < middle < enough:
            break
        here = trial.at(middle)[-1]
        if trial.clears(here):
            found.append(here)
            enough = middle
        else:
            short = middle
    return found


def _cheapest(settings: list[Setting]) -> list[Setting]:
    """The settings no other one beats in both lists probed and shortlist re-scored."""
    return [
        setting
        for setting in settings
        if not any(
            other[0] <= setting[0] and other[2] <= setting[2] and other[:3] != setting[:3]
            for other in settings
        )
    ]


def _powers(limit: int) -> list[int]:
    values = [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]
    return values if values[-1] == limit else [*values, limit]


def _latency(store: Tunable, queries: np.ndarray, setting: Setting, exact: Exact | None) -> float:
    """Median milliseconds of one query at a time, after one warm-up search."""
    store.set_search(*setting[:3])
    store.search(queries[:1], K, exact=exact)
    times = []
    for row in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        store.search(row[None], K, exact=exact)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)
