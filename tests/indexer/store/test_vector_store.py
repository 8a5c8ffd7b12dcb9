"""The FAISS store against brute force, with catalog ids, atomic saves and size-based choice."""

from __future__ import annotations

import os

import faiss
import numpy as np

from indexer.store import vector_store
from indexer.store.catalog import Catalog, NewImage
from indexer.store.vector_store import VectorStore, choose_index, rebuild, sync


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_matches_brute_force(tmp_path):
    data, queries = unit(500, 32, 0), unit(5, 32, 1)
    ids = np.arange(1000, 1500, dtype=np.int64)
    store = VectorStore.empty(32)
    store.add(ids, data)
    scores, found = store.search(queries, 10)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    assert (found == ids[exact]).all()
    assert np.allclose(scores, np.take_along_axis(queries @ data.T, exact, axis=1), atol=1e-5)
    store.remove(ids[:100])
    assert store.ids().tolist() == ids[100:].tolist()
    store.save(tmp_path)
    again = VectorStore.load(tmp_path, 32)
    assert again.ids().tolist() == ids[100:].tolist()
    # No temporary file left beside it; its record names the file's generation (none here).
    assert sorted(os.listdir(tmp_path)) == ["vectors.faiss", "vectors.json"]


def test_index_kind_follows_collection_size():
    assert choose_index(10).factory == "IDMap2,Flat"
    big = choose_index(1_000_000)
    assert big.factory.startswith("IVF") and big.nprobe > 0


def test_sync_with_catalog_and_ivf_rebuild(tmp_path, monkeypatch):
    catalog = Catalog.open(tmp_path)
    vectors = unit(3000, 16, 2)
    rows = [
        NewImage(f"/p/{i}".encode(), 1, 1, i.to_bytes(16, "big"), vector=v)
        for i, v in enumerate(vectors)
    ]
    ids = np.array(catalog.write_batch(rows), dtype=np.int64)
    store, changed = sync(VectorStore.empty(16), catalog)
    assert changed and store.ids().tolist() == ids.tolist()
    catalog.delete_ids(ids[:10].tolist())
    store, changed = sync(store, catalog)
    assert changed and store.ids().tolist() == ids[10:].tolist()
    assert sync(store, catalog)[1] is False
    # Above the exact limit the store becomes an inverted file, ids still catalog ids.
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    store, changed = sync(store, catalog)
    assert changed and not isinstance(store.index, faiss.IndexIDMap2)
    assert store.ids().tolist() == ids[10:].tolist()
    _, found = store.search(vectors[500:501], 1)
    assert found[0, 0] == ids[500]


def test_rebuild_is_exact_for_small_collections(tmp_path):
    catalog = Catalog.open(tmp_path)
    rows = [NewImage(b"/a", 1, 1, b"a" * 16, vector=unit(1, 8, 3)[0])]
    live = np.array(catalog.write_batch(rows), dtype=np.int64)
    store = rebuild(catalog, 8, live)
    assert isinstance(store.index, faiss.IndexIDMap2) and len(store) == 1


def test_search_among_allowed_ids_matches_brute_force(monkeypatch):
    data, queries = unit(3000, 16, 4), unit(3, 16, 5)
    ids = np.arange(10, 3010, dtype=np.int64)
    allowed = ids[::7]
    picked = data[::7]
    exact = allowed[np.argsort(-(queries @ picked.T), axis=1)[:, :5]]
    flat = VectorStore.build(ids, data)
    assert (flat.search(queries, 5, allowed)[1] == exact).all()
    # An inverted file probes more lists for a selective filter, so it still finds them all.
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    ivf = VectorStore.build(ids, data)
    assert not isinstance(ivf.index, faiss.IndexIDMap2)
    found = ivf.search(queries, 5, allowed[:20])[1]
    assert set(found.ravel()) <= set(allowed[:20].tolist())
    assert (found == allowed[:20][np.argsort(-(queries @ picked[:20].T), axis=1)[:, :5]]).all()


def brute_force(queries: np.ndarray, data: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]
    return ids[order]


def test_ivf_returns_k_whenever_k_pass_with_and_without_filters(monkeypatch):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    data, queries = unit(3000, 16, 6), unit(4, 16, 7)
    ids = np.arange(5, 3005, dtype=np.int64)
    ivf = VectorStore.build(ids, data)
    assert not isinstance(ivf.index, faiss.IndexIDMap2)
    # Unfiltered, k beyond what nprobe lists hold: all of them still come back.
    _, found = ivf.search(queries, 3000)
    assert (found >= 0).all() and all(len(set(row)) == 3000 for row in found.tolist())
    # Filtered: k results whenever k pass, exact for a small allowed set.
    rng = np.random.default_rng(8)
    for share, k in ((0.3, 500), (0.05, 100), (0.02, 30)):
        mask = rng.random(3000) < share
        allowed, picked = ids[mask], data[mask]
        assert len(allowed) >= k
        _, found = ivf.search(queries, k, allowed)
        assert (found >= 0).all(), (share, k)
        assert set(found.ravel()) <= set(allowed.tolist())
        if len(allowed) <= vector_store.SCAN_LIMIT:
            assert (found == brute_force(queries, picked, allowed, k)).all(), (share, k)
    few = ids[[3, 900, 2999]]
    _, found = ivf.search(queries, 10, few)
    assert (found[:, 3:] == -1).all()
    assert (found[:, :3] == brute_force(queries, data[[3, 900, 2999]], few, 3)).all()
    # Stale ids excluded (a reader's view of a file older than its catalog).
    _, found = ivf.search(queries, 50, excluded=ids[:1500])
    assert (found >= ids[1500]).all()


def test_ivf_is_retrained_when_the_collection_outgrows_it(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    catalog = Catalog.open(tmp_path)
    vectors = unit(6000, 16, 9)

    def add(start: int, stop: int) -> None:
        catalog.write_batch([
            NewImage(f"/p/{i}".encode(), 1, 1, i.to_bytes(16, "big"), vector=vectors[i])
            for i in range(start, stop)
        ])  # fmt: skip

    add(0, 1200)
    store, _ = sync(VectorStore.empty(16), catalog)
    assert not isinstance(store.index, faiss.IndexIDMap2) and store.trained_for == 1200
    store.save(tmp_path, generation=catalog.generation())
    add(1200, 3000)  # 2.5x: kept, new vectors added to the lists it has
    store, changed = sync(VectorStore.load(tmp_path, 16), catalog)
    assert changed and store.trained_for == 1200 and len(store) == 3000
    store.save(tmp_path, generation=catalog.generation())
    add(3000, 6000)  # 5x what it was trained on: trained again
    store, changed = sync(VectorStore.load(tmp_path, 16), catalog)
    assert changed and store.trained_for == 6000 and len(store) == 6000
    store.save(tmp_path, generation=catalog.generation())
    again = VectorStore.load(tmp_path, 16)
    assert again.trained_for == 6000 and again.generation == catalog.generation()


def test_the_file_records_the_generation_it_reflects(tmp_path):
    catalog = Catalog.open(tmp_path)
    assert catalog.generation() == 0
    catalog.write_batch([NewImage(b"/a", 1, 1, b"a" * 16, vector=unit(1, 8, 3)[0])])
    first = catalog.generation()
    assert first > 0
    catalog.delete_ids([])  # nothing changed: the same generation
    assert catalog.generation() == first
    vector_store.refresh(tmp_path, catalog, 8)
    assert VectorStore.load(tmp_path, 8).generation == first
    # A vector file the record does not describe (copied in, or saved by a run killed before
    # its record): its generation is unknown, so readers check it against the catalog.
    other = VectorStore.empty(8)
    other.add(np.array([7, 8]), unit(2, 8, 4))
    other.save(tmp_path)
    assert VectorStore.load(tmp_path, 8).generation is None


def test_gpu_only_when_asked_large_enough_and_within_k():
    big = vector_store.GPU_MIN_VECTORS
    assert not vector_store.gpu_worthwhile(False, big, 10, gpus=1)  # a CLI query: never
    assert vector_store.gpu_worthwhile(True, big, 10, gpus=1)
    assert not vector_store.gpu_worthwhile(True, big, 10, gpus=0)
    assert not vector_store.gpu_worthwhile(True, big - 1, 10, gpus=1)  # a scan beats the copy
    assert not vector_store.gpu_worthwhile(True, big, vector_store.GPU_MAX_K + 1, gpus=1)
    # Any k works (here on the CPU: this machine has no GPU; faiss-gpu is not installed).
    store = VectorStore.build(np.arange(3000, dtype=np.int64), unit(3000, 8, 5))
    store.gpu = True
    _, found = store.search(unit(1, 8, 6), 2500)
    assert (found >= 0).all() and len(set(found[0].tolist())) == 2500
