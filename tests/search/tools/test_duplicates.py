"""`duplicates` on a real catalog and FAISS index of constructed vectors: every pair in a group
is at or above the threshold, large sets of copies form one group, chains do not merge."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from indexer.models.loading import ModelIdentity
from indexer.store.catalog import Catalog, NewImage
from indexer.store.index_dir import ModelRecord
from indexer.store.vector_store import VectorStore, sync
from search.engine import Engine
from search.tools.duplicates import find_duplicates

DIM = 16


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def engine_over(directory: Path, vectors: list[np.ndarray], hashes: list[bytes] | None = None):
    """An engine over a real index holding `vectors` as images img00000.jpg, ... (no model)."""
    directory.mkdir(exist_ok=True)
    catalog = Catalog.open(directory)
    catalog.write_batch([
        NewImage(f"img{n:05d}.jpg".encode(), 1, 1,
                 hashes[n] if hashes else n.to_bytes(16, "big"), vector=unit(v))
        for n, v in enumerate(vectors)
    ])  # fmt: skip
    record = ModelRecord(ModelIdentity("synthetic", "synthetic", "none"), DIM, 64)
    catalog.set_meta("model", record.to_json())
    store, _ = sync(VectorStore.empty(DIM), catalog)
    store.save(directory)
    catalog.close()
    return Engine.open(directory)


def along(angle_degrees: float) -> np.ndarray:
    """A unit vector in the plane of the first two axes."""
    v = np.zeros(DIM, np.float32)
    v[0], v[1] = np.cos(np.radians(angle_degrees)), np.sin(np.radians(angle_degrees))
    return v


def test_a_chain_never_joins_images_below_the_threshold(tmp_path: Path) -> None:
    # A~B and B~C at cos 18° = 0.951, A and C at cos 36° = 0.809: A and C are no duplicates.
    a, b, c = along(0), along(18), along(36)
    far = np.eye(DIM, dtype=np.float32)[5]
    with engine_over(tmp_path / "index", [a, b, c, far]) as engine:
        groups = find_duplicates(engine, threshold=0.95)
    assert len(groups) == 1
    (group,) = groups
    assert len(group.rows) == 2 and b"img00001.jpg" in {r.path for r in group.rows}
    assert 0.95 <= group.min_score < 0.952


def test_a_hundred_copies_are_one_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.normal(size=DIM)
    copies = [photo + rng.normal(scale=0.01, size=DIM) for _ in range(100)]  # re-encodings
    others = list(rng.normal(size=(40, DIM)))
    with engine_over(tmp_path / "index", copies + others) as engine:
        groups = find_duplicates(engine, threshold=0.95)
    assert len(groups) == 1
    assert [r.path for r in groups[0].rows] == [f"img{n:05d}.jpg".encode() for n in range(100)]
    assert not groups[0].exact
    vectors = np.stack([unit(v) for v in copies])
    assert groups[0].min_score == pytest.approx(float((vectors @ vectors.T).min()), abs=1e-5)


def test_byte_identical_copies_are_exact(tmp_path: Path) -> None:
    photo = np.arange(DIM, dtype=np.float32)
    with engine_over(tmp_path / "index", [photo] * 100, hashes=[b"h" * 16] * 100) as engine:
        (group,) = find_duplicates(engine)
    assert len(group.rows) == 100 and group.exact and group.min_score == 1.0


def test_groups_against_brute_force(tmp_path: Path) -> None:
    """Seeded clusters with overlaps: every pair inside a group is at ≥ T, no image is in two
    groups, and no two images left out of every group are at ≥ T (the groups are maximal)."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, DIM))
    vectors = [centres[i % 30] + rng.normal(scale=0.15, size=DIM) for i in range(300)]
    threshold = 0.97
    with engine_over(tmp_path / "index", vectors) as engine:
        groups = find_duplicates(engine, threshold=threshold)
    unit_rows = np.stack([unit(v) for v in vectors])
    number = {f"img{n:05d}.jpg".encode(): n for n in range(len(vectors))}
    seen: set[int] = set()
    for group in groups:
        members = [number[r.path] for r in group.rows]
        assert not seen & set(members)
        seen |= set(members)
        pairs = [float(unit_rows[i] @ unit_rows[j]) for i, j in combinations(members, 2)]
        assert min(pairs) >= threshold - 1e-6
        assert group.min_score == pytest.approx(min(pairs), abs=1e-5)
    left = [n for n in range(len(vectors)) if n not in seen]
    cosines = unit_rows[left] @ unit_rows[left].T
    np.fill_diagonal(cosines, -1)
    assert cosines.max() < threshold
    assert len(groups) >= 10  # the data does hold duplicates
