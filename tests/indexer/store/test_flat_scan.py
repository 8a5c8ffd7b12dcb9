"""A Flat vector file read without faiss gives faiss' arrays and faiss' answers; any other file
is left to faiss."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.store import vector_store
from indexer.store.flat_scan import read_flat
from indexer.store.vector_store import VECTORS_FILE, VectorStore

DIM = 24


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def saved(directory: Path, n: int, removed: int = 0) -> VectorStore:
    """A Flat store of n seeded vectors under scattered ids, `removed` of them then removed."""
    ids = np.random.default_rng(1).permutation(10 * n + 1)[:n].astype(np.int64) + 1
    store = VectorStore.build(ids, unit_rows(n, seed=2))
    store.remove(ids[:removed])
    store.save(directory, generation=7)
    return store


@pytest.mark.parametrize(("n", "removed"), [(0, 0), (1, 0), (300, 0), (300, 40)])
def test_the_arrays_are_what_faiss_holds(tmp_path, n, removed):
    store = saved(tmp_path, n, removed)
    flat = read_flat(tmp_path / VECTORS_FILE, DIM)
    assert flat is not None
    index = faiss.read_index(str(tmp_path / VECTORS_FILE))
    np.testing.assert_array_equal(flat.ids, faiss.vector_to_array(index.id_map))
    np.testing.assert_array_equal(flat.vectors, index.index.reconstruct_n(0, index.ntotal))
    loaded = VectorStore.load(tmp_path, DIM, scan=True)
    assert loaded.flat is not None and loaded.generation == 7 and len(loaded) == len(store)
    np.testing.assert_array_equal(loaded.ids(), store.ids())


def test_a_scan_answers_as_faiss_does(tmp_path):
    store = saved(tmp_path, 500, removed=25)
    scan = VectorStore.load(tmp_path, DIM, scan=True)
    assert scan.flat is not None
    ids = store.ids()
    rng = np.random.default_rng(5)
    queries = unit_rows(4, seed=9)
    some = np.sort(rng.choice(ids, 30, replace=False))
    none = np.empty(0, np.int64)
    cases = [(10, None, None), (1, None, None), (600, None, None), (10, some, None),
             (50, some, None), (10, None, some), (10, some, some[:10]),
             (10, none, None)]  # fmt: skip
    for k, allowed, excluded in cases:
        want_scores, want_ids = store.search(queries, k, allowed, excluded)
        got_scores, got_ids = scan.search(queries, k, allowed, excluded)
        np.testing.assert_array_equal(got_ids, want_ids)
        found = want_ids >= 0
        np.testing.assert_allclose(got_scores[found], want_scores[found], atol=1e-6)
        assert got_ids.dtype == np.int64 and got_scores.shape == (4, k)


def test_a_scan_store_is_read_only_and_builds_faiss_only_when_asked(tmp_path):
    store = saved(tmp_path, 50)
    scan = VectorStore.load(tmp_path, DIM, scan=True)
    with pytest.raises(RuntimeError, match="read-only"):
        scan.add(np.array([10_000]), unit_rows(1, seed=3))
    assert scan.kind() == "flat" and scan.is_exact() and scan.nprobe == 0
    assert scan.index.ntotal == len(store)  # built from the arrays, on demand


def damaged(path: Path, how: str) -> None:
    data = path.read_bytes()
    changed = {
        "truncated": data[:-1],
        "padded": data + b"\0",
        "short head": data[:50],
        "empty": b"",
        "another layout": b"IxF2" + data[4:],
        "inner kind": data[:37] + b"IxF2" + data[41:],
    }[how]
    path.write_bytes(changed)


@pytest.mark.parametrize(
    "how", ["truncated", "padded", "short head", "empty", "another layout", "inner kind"]
)
def test_a_file_it_does_not_recognise_is_left_to_faiss(tmp_path, how):
    saved(tmp_path, 20)
    damaged(tmp_path / VECTORS_FILE, how)
    assert read_flat(tmp_path / VECTORS_FILE, DIM) is None


def test_another_dimension_or_an_inverted_file_is_read_by_faiss(tmp_path, monkeypatch):
    saved(tmp_path, 20)
    assert read_flat(tmp_path / VECTORS_FILE, DIM + 1) is None
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 100)  # an inverted file from 100 vectors
    ivf = VectorStore.build(np.arange(1, 401), unit_rows(400, seed=4))
    ivf.save(tmp_path)
    assert read_flat(tmp_path / VECTORS_FILE, DIM) is None
    loaded = VectorStore.load(tmp_path, DIM, scan=True)
    assert loaded.flat is None and loaded.kind() == "ivf"
