"""Groups of duplicate images: byte-identical copies (same content hash) and near-duplicates
(resized, re-encoded or lightly edited versions) whose embeddings have cosine ≥ a threshold.

A group is a set of two or more images in which *every pair* is at cosine ≥ T, so a chain of
edits A~B~C never puts A and C together when they are far apart. Groups are grown greedily and
deterministically: each image's neighbours at ≥ T come from one FAISS range search (no cap on
how many, so a hundred copies of a photo are one group); images become seeds in order of how
many neighbours they have (most first, then by path); a seed's group takes its neighbours not
yet in a group, closest to the seed first, each joining only when it is at ≥ T to every member
already in. No image is in two groups, and no two images left out of every group are at ≥ T.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from indexer.store.catalog import OK, ImageRow
from search.engine import Engine

DEFAULT_THRESHOLD = 0.95
_CHUNK = 4096  # query rows per range search: bounds the vectors and results held at once
_SLACK = 1e-6  # FAISS keeps similarities strictly above the radius; the cut at T is ours


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies or near-copies of each other; `exact` when all bytes agree.

    `min_score` is the lowest cosine between any two members (1.0 when `exact`).
    """

    rows: list[ImageRow]
    exact: bool
    min_score: float


def find_duplicates(engine: Engine, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Every group of two or more images, largest first."""
    rows = {row.id: row for row in engine.catalog.all_rows(status=OK)}
    neighbours = dict(_neighbours(engine, np.fromiter(rows, np.int64), threshold))
    seeds = sorted(neighbours, key=lambda i: (-len(neighbours[i]), rows[i].path))
    grouped: set[int] = set()
    groups = []
    for seed in seeds:
        if seed in grouped:
            continue
        candidates = [i for i in neighbours[seed] if i not in grouped and i in rows]
        members, weakest = _grow(engine, seed, candidates, threshold)
        if len(members) < 2:
            continue
        grouped.update(members)
        group_rows = sorted((rows[i] for i in members), key=lambda r: r.path)
        exact = len({r.content_hash for r in group_rows}) == 1
        groups.append(DuplicateGroup(group_rows, exact, 1.0 if exact else weakest))
    return sorted(groups, key=lambda g: (-len(g.rows), g.rows[0].path))


def _neighbours(
    engine: Engine, ids: np.ndarray, threshold: float
) -> Iterator[tuple[int, list[int]]]:
    """(id, the other ids at cosine ≥ threshold, closest first) for each id with any."""
    index = engine.store.index
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        vectors = np.ascontiguousarray(engine.catalog.vectors(chunk, engine.record.dim))
        limits, scores, found = index.range_search(vectors, threshold - _SLACK)
        for row, own in enumerate(chunk.tolist()):
            lo, hi = limits[row], limits[row + 1]
            keep = (found[lo:hi] != own) & (scores[lo:hi] >= threshold)
            order = np.argsort(-scores[lo:hi][keep], kind="stable")
            others = found[lo:hi][keep][order].tolist()
            if others:
                yield own, others


def _grow(
    engine: Engine, seed: int, candidates: list[int], threshold: float
) -> tuple[list[int], float]:
    """The seed's group from its candidates (closest first) and its weakest pairwise cosine."""
    if not candidates:
        return [seed], 1.0
    vectors = engine.catalog.vectors(np.array([seed, *candidates], np.int64), engine.record.dim)
    members, weakest = [0], 1.0
    for position in range(1, len(vectors)):
        cosines = vectors[members] @ vectors[position]
        if cosines.min() >= threshold:
            members.append(position)
            weakest = min(weakest, float(cosines.min()))
    ids = [seed, *candidates]
    return [ids[p] for p in members], weakest
