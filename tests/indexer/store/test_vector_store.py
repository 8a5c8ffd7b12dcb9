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
    assert os.listdir(tmp_path) == ["vectors.faiss"]  # no temporary file left beside it


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
