"""The fast-scan implementation a search of 4-bit PQ codes uses: one query list by list, a batch
grouped by list, the same neighbours either way (real FAISS, against its own batch answer)."""

from __future__ import annotations

import faiss
import numpy as np

from indexer.store import fast_scan
from indexer.store.index_choice import IndexChoice
from indexer.store.vector_store import VectorStore

DIM = 16


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fast_scan_store() -> VectorStore:
    choice = IndexChoice(
        "OPQ4,IVF16_HNSW32,PQ4x4fs", nprobe=8, nlist=16, pq_parts=4, ef_search=16, refine=4
    )
    store = VectorStore.empty(DIM, choice=choice)
    data = unit(3000, 0)
    store.index.train(data)
    store.add(np.arange(3000, dtype=np.int64), data)
    return store


def test_a_single_query_scans_list_by_list_and_a_batch_grouped_by_list():
    store = fast_scan_store()
    ivf = faiss.downcast_index(faiss.extract_index_ivf(store.index))
    queries = unit(12, 1)
    batch_scores, batch_ids = store.search(queries, 30)
    assert ivf.implem == fast_scan.BATCH
    for row, (scores, ids) in enumerate(zip(batch_scores, batch_ids, strict=True)):
        one_scores, one_ids = store.search(queries[row : row + 1], 30)
        assert ivf.implem == fast_scan.SINGLE_QUERY
        # The same codes scored the same way: equal scores, the same ids up to ties.
        assert np.allclose(one_scores[0], scores)
        assert len(np.intersect1d(one_ids[0], ids)) >= 28
    store.search(queries[:2], 30)
    assert ivf.implem == fast_scan.BATCH


def test_an_index_without_fast_scan_lists_is_left_alone():
    flat = faiss.IndexFlatIP(DIM)
    fast_scan.choose(flat, 1)  # no inverted file: nothing to set, no error
    ivf = faiss.index_factory(DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    fast_scan.choose(ivf, 1)
    assert not isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan)
