"""Groups of duplicate images: byte-identical copies (same content hash) and near-duplicates
(resized, re-encoded or lightly edited versions) whose embeddings have cosine ≥ a threshold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from indexer.store.catalog import OK, ImageRow
from search.engine import Engine

DEFAULT_THRESHOLD = 0.95
_NEIGHBOURS = 16  # candidates per image; a larger group is still joined through its members


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies or near-copies of each other; `exact` when all bytes agree."""

    rows: list[ImageRow]
    exact: bool
    min_score: float


def find_duplicates(engine: Engine, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Every group of two or more images, largest first."""
    rows = {row.id: row for row in engine.catalog.all_rows(status=OK)}
    parent = {image_id: image_id for image_id in rows}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    weakest: dict[tuple[int, int], float] = {}
    for a, b, score in _similar_pairs(engine, np.fromiter(rows, np.int64), threshold):
        if a in parent and b in parent:
            parent[find(a)] = find(b)
            weakest[(min(a, b), max(a, b))] = score
    members: dict[int, list[int]] = defaultdict(list)
    for image_id in rows:
        members[find(image_id)].append(image_id)
    groups = []
    for ids in members.values():
        if len(ids) < 2:
            continue
        group_rows = sorted((rows[i] for i in ids), key=lambda r: r.path)
        exact = len({r.content_hash for r in group_rows}) == 1
        inside = set(ids)
        scores = [s for (a, b), s in weakest.items() if a in inside and b in inside]
        groups.append(DuplicateGroup(group_rows, exact, 1.0 if exact else min(scores)))
    return sorted(groups, key=lambda g: (-len(g.rows), g.rows[0].path))


def _similar_pairs(engine: Engine, ids: np.ndarray, threshold: float):  # noqa: ANN202
    """(id, id, cosine) for neighbours at or above the threshold."""
    for start in range(0, len(ids), 4096):
        chunk = ids[start : start + 4096]
        vectors = engine.catalog.vectors(chunk, engine.record.dim)
        scores, found = engine.knn(vectors, min(_NEIGHBOURS, len(ids)), None)
        for own, row_scores, row_ids in zip(chunk, scores, found, strict=True):
            for score, other in zip(row_scores, row_ids, strict=True):
                if other >= 0 and other != own and score >= threshold:
                    yield int(own), int(other), float(score)
