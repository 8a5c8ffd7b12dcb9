"""Choosing, building and tuning the index within a memory budget, against brute force."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from indexer.errors import BadInput
from indexer.store import index_choice, vector_store
from indexer.store.catalog import Catalog, NewImage
from indexer.store.index_choice import choose, estimate_bytes, parse_size
from indexer.store.index_tuning import CONFIDENCE_Z, exact_top, recall_at
from indexer.store.live_view import LiveVectors
from indexer.store.vector_store import VectorStore, build_streaming, choose_index, refresh, sync

DIM = 32


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mixture(n: int, d: int, seed: int) -> np.ndarray:
    """Small anisotropic clusters over a uniform background: no easy structure to exploit."""
    rng = np.random.default_rng(seed)
    centres = unit(n // 20, d, seed + 1)
    scales = rng.uniform(0.05, 0.6, size=(len(centres), d)).astype(np.float32)
    which = rng.integers(0, len(centres), n)
    x = centres[which] + scales[which] * rng.standard_normal((n, d)).astype(np.float32)
    background = rng.random(n) < 0.3
    x[background] = rng.standard_normal((int(background.sum()), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(queries: np.ndarray, data: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]]


def test_the_choice_follows_size_dimension_and_budget():
    gb = 1 << 30
    assert choose(50_000, 512, gb, 100_000).factory == "IDMap2,Flat"
    ivf = choose(1_000_000, 512, 8 * gb, 100_000)
    assert ivf.kind == "ivf" and ivf.factory == f"IVF{ivf.nlist},Flat"
    assert 4 * 1000 <= ivf.nlist <= 16 * 1000  # 4-16 sqrt(n)
    # 10M x 512 float32 is 20 GB: only PQ codes fit 2 GB, fast-scan ones of 4-float parts.
    pq = choose(10_000_000, 512, 2 * gb, 100_000)
    m = pq.pq_parts
    assert pq.kind == "pq" and pq.factory == f"OPQ{m},IVF{pq.nlist}_HNSW32,PQ{m}x4fs"
    assert m == 512 // 4 and pq.code_bytes == m // 2
    assert estimate_bytes(pq, 10_000_000, 512) <= 2 * gb
    assert pq.refine > 0 and pq.ef_search > 0
    # A smaller budget takes coarser codes; one too small for any, the coarsest.
    assert choose(10_000_000, 512, 300 << 20, 100_000).pq_parts == 512 // 16
    assert choose(10_000_000, 512, 1 << 20, 100_000).pq_parts == 512 // 128
    # A code must divide the dimension (OPQ and PQ split the vector into equal parts).
    assert 100 % choose(1_000_000, 100, 64 << 20, 100_000).pq_parts == 0


def test_the_k_means_stays_affordable_at_ten_million():
    # 4*sqrt(n) lists up to a cap: k-means cost grows as lists squared (points follow lists).
    one = choose(1_000_000, 512, 200 << 20, 100_000)
    assert one.nlist == 4096 and index_choice.training_size(one, 1_000_000) == 40 * 4096
    ten = choose(10_000_000, 512, 2 << 30, 100_000)
    assert ten.nlist == index_choice.MAX_LISTS == 8192
    # A few tens of points per list, never the 40 x 16,384 the uncapped rule would want.
    assert index_choice.training_size(ten, 10_000_000) == index_choice.MAX_TRAIN_POINTS
    assert 30 <= index_choice.MAX_TRAIN_POINTS / ten.nlist < index_choice.TRAIN_PER_LIST
    assert choose(10**9, 512, 1 << 40, 100_000).nlist == 8192


def test_the_default_budget_is_a_share_of_the_machine():
    assert index_choice.default_budget() == int(
        index_choice.machine_memory() * index_choice.DEFAULT_RAM_SHARE
    )
    assert choose_index(1_000_000, 512) == choose(
        1_000_000, 512, index_choice.default_budget(), vector_store.EXACT_LIMIT
    )


def test_sizes_parse_and_bad_ones_are_one_line_errors():
    assert parse_size("2G") == 2 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("1.5GB") == 3 << 29
    assert parse_size("800MiB") == 800 << 20
    assert parse_size("4096") == 4096
    for bad in ("", "lots", "-1G", "0", "2X"):
        with pytest.raises(BadInput, match="--max-index-memory"):
            parse_size(bad)


def catalog_of(tmp_path, vectors: np.ndarray) -> tuple[Catalog, np.ndarray]:
    catalog = Catalog.open(tmp_path)
    rows = [
        NewImage(f"/p/{i}".encode(), 1, 1, i.to_bytes(16, "big"), vector=v)
        for i, v in enumerate(vectors)
    ]
    return catalog, np.array(catalog.write_batch(rows), dtype=np.int64)


# 2,000 x 16: full vectors need ~160 kB; 120 kB leaves room for 8-byte PQ codes only (small:
# PQ training is slow on tiny subvectors).
SMALL_BUDGET = 120_000
PQ_DIM = 16


@pytest.fixture(scope="module")
def pq_index(tmp_path_factory):
    """One catalog whose IVF store a smaller budget turns into PQ (built once: PQ training is
    the slow part), with the catalog ids and vectors."""
    directory = tmp_path_factory.mktemp("pq")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vector_store, "EXACT_LIMIT", 1000)
        vectors = mixture(2000, PQ_DIM, 0)
        catalog, ids = catalog_of(directory, vectors)
        ivf, _ = sync(VectorStore.empty(PQ_DIM), catalog)
        assert ivf.kind() == "ivf"
        assert vector_store.outgrown(ivf, 2000, SMALL_BUDGET)
        ivf.save(directory, generation=catalog.generation())
        store = refresh(directory, catalog, PQ_DIM, budget=SMALL_BUDGET)
        assert store.kind() == "pq" and store.ids().tolist() == ids.tolist()
        assert sync(store, catalog, SMALL_BUDGET)[1] is False  # the right kind now: kept
    yield directory, catalog, ids, vectors
    catalog.close()


def test_a_pq_index_is_tuned_to_the_recall_target_and_records_it(pq_index):
    directory, catalog, ids, vectors = pq_index
    again = VectorStore.load(directory, PQ_DIM)
    assert again.kind() == "pq" and again.refine > 0 and again.nprobe > 0
    assert again.recall is not None and again.recall >= 0.95
    record = json.loads((directory / "vectors.json").read_text())
    assert record["factory"].startswith("OPQ") and "_HNSW32,PQ" in record["factory"]
    assert record["factory"].endswith("x4fs") and record["index_type"] == "IndexPreTransform"
    assert record["trained_for"] == 2000 and record["recall"] == again.recall
    # Loaded again, the tuned settings come back.
    tuned = (record["nprobe"], record["ef_search"], record["refine"])
    assert (again.nprobe, again.ef_search, again.refine) == tuned
    # A reader re-scores with the catalog's vectors: new queries reach the target too, with
    # exact scores.
    queries = mixture(200, PQ_DIM, 7)
    scores, found = LiveVectors(again, catalog).search(queries, 10)
    truth = brute(queries, vectors, ids, 10)
    assert recall_at(found, truth) >= 0.9
    exact_scores = np.take_along_axis(queries @ vectors.T, np.searchsorted(ids, found), axis=1)
    assert np.allclose(scores, exact_scores, atol=1e-5)
    # Without the exact vectors PQ scores alone rank far worse: the refine stage is what counts.
    _, coarse = again.search(queries, 10)
    assert recall_at(coarse, truth) < recall_at(found, truth)


def test_a_built_index_is_tuned_again_without_a_rebuild(pq_index, tmp_path):
    directory, catalog, ids, _ = pq_index
    store = VectorStore.load(directory, PQ_DIM, mmap=False)
    store.set_search(1, 16, 1)  # one list, no shortlist: far below the target
    tuning = vector_store.retune(store, ids, lambda some: catalog.vectors(some, PQ_DIM))
    assert tuning.recall - CONFIDENCE_Z * tuning.recall_se >= 0.95 and tuning.recall_se > 0
    settings = (tuning.nprobe, tuning.ef_search, tuning.refine)
    assert (store.nprobe, store.ef_search, store.refine) == settings
    # Saved, the new settings and their measurement are the file's.
    store.save(tmp_path)
    again = VectorStore.load(tmp_path, PQ_DIM)
    assert (again.nprobe, again.ef_search, again.refine) == settings
    assert (again.recall, again.recall_se) == (tuning.recall, tuning.recall_se)


def test_a_narrow_filter_on_a_pq_index_is_exact(pq_index):
    directory, catalog, ids, vectors = pq_index
    # Mapped (as a file larger than RAM is): the same answers, exact under narrow filters.
    view = LiveVectors(VectorStore.load(directory, PQ_DIM, mmap=True), catalog)
    assert view.store.mapped and view.store.kind() == "pq"
    queries = unit(5, PQ_DIM, 2)
    allowed = ids[::9]
    _, found = view.search(queries, 20, allowed)
    assert (found == brute(queries, vectors[::9], allowed, 20)).all()
    few = ids[[4, 1000, 1999]]
    _, found = view.search(queries, 10, few)
    assert (found[:, :3] == brute(queries, vectors[[4, 1000, 1999]], few, 3)).all()
    assert (found[:, 3:] == -1).all()


def test_the_build_streams_the_catalog_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    vectors = mixture(3000, DIM, 3)
    ids = np.arange(100, 3100, dtype=np.int64)
    calls: list[int] = []

    def read(some: np.ndarray) -> np.ndarray:
        calls.append(len(some))
        return vectors[some - 100]

    store = build_streaming(ids, DIM, read, budget=None, chunk=400)
    assert store.kind() == "ivf" and store.ids().tolist() == ids.tolist()
    training = index_choice.training_size(choose_index(3000, DIM), 3000)
    # Never the whole matrix: the training sample once, then chunks (adds, the exact scan).
    assert max(calls) <= max(400, training) and sum(c == 400 for c in calls) >= 14
    assert store.recall is not None and store.recall >= 0.95


@pytest.mark.parametrize("size", [500, 3000])
def test_a_memory_mapped_index_answers_the_same_and_is_read_only(tmp_path, monkeypatch, size):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    data, queries = unit(size, 16, 5), unit(4, 16, 6)
    ids = np.arange(7, 7 + size, dtype=np.int64)
    built = VectorStore.build(ids, data)
    built.save(tmp_path)
    loaded = VectorStore.load(tmp_path, 16, mmap=False)
    mapped = VectorStore.load(tmp_path, 16, mmap=True)
    assert mapped.mapped and not loaded.mapped
    for allowed in (None, ids[::5]):
        assert (
            mapped.search(queries, 10, allowed)[1] == loaded.search(queries, 10, allowed)[1]
        ).all()
    assert mapped.ids().tolist() == ids.tolist()
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.add(ids[:1] + 10_000, data[:1])
    # Larger than the memory available (here: any file), a reader maps it without being asked.
    monkeypatch.setattr(vector_store, "MMAP_SHARE", 1e-12)
    assert VectorStore.load(tmp_path, 16).mapped
    # The writer never maps: it adds and removes.
    assert not vector_store.VectorStore.load(tmp_path, 16, mmap=False).mapped


def test_exact_top_scans_in_chunks_and_leaves_the_query_out():
    data = unit(1000, 8, 8)
    ids = np.arange(1000, dtype=np.int64) * 3
    query_ids = ids[[0, 500, 999]]

    def read(some: np.ndarray) -> np.ndarray:
        return data[some // 3]

    truth = exact_top(read, ids, query_ids, 5, chunk=128)
    scores = data[[0, 500, 999]] @ data.T
    scores[[0, 1, 2], [0, 500, 999]] = -np.inf
    assert (truth == ids[np.argsort(-scores, axis=1, kind="stable")[:, :5]]).all()


def test_too_short_lists_widen_the_probe_step_by_step_not_to_every_list(monkeypatch):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)
    data, queries = unit(3000, 16, 9), unit(1, 16, 10)
    ids = np.arange(3000, dtype=np.int64)
    store = VectorStore.build(ids, data)
    store.set_search(1, 0, 0)  # one list holds ~12 of 3000 vectors in 256 lists
    stats = faiss.cvar.indexIVF_stats
    stats.reset()
    _, found = store.search(queries, 20)
    assert (found >= 0).all() and len(set(found[0].tolist())) == 20
    # 1 list, then 4, maybe 16: never a scan of all 256 for a shortlist of 20.
    assert stats.nq >= 1 and stats.nlist < 256


def test_a_deep_probe_scans_the_centroids_instead_of_walking_the_graph(pq_index):
    directory, _, _, _ = pq_index
    store = VectorStore.load(directory, PQ_DIM)
    nlist = faiss.extract_index_ivf(store.index).nlist
    queries = mixture(20, PQ_DIM, 11)
    stats = faiss.cvar.hnsw_stats
    # Deep: 64 of 256 lists. The graph would compute more distances than there are centroids.
    store.set_search(64, 128, 0)
    stats.reset()
    _, found = store.search(queries, 10)
    assert stats.ndis == 0  # no graph walk
    # The same lists as a graph searched to every node (which finds the exact nearest lists).
    params = faiss.SearchParametersIVF()
    params.nprobe = 64
    graph = faiss.SearchParametersHNSW()
    graph.efSearch = nlist
    params.quantizer_params = graph
    assert (found == store.index.search(queries, 10, params=params)[1]).all()
    # Shallow: a few lists, the graph pays.
    store.set_search(2, 4, 0)
    stats.reset()
    store.search(queries, 10)
    assert stats.ndis > 0
