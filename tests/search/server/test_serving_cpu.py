"""The server's cheap hot path: coalesced vector searches answer exactly as lone ones, the text
search route writes the JSON the engine's hits make, the opt-in int8 text tower is made once,
and the load benchmark's clients keep their connections alive and count the CPU per query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from helpers import REPO
from indexer.errors import BadInput
from indexer.locations import TOWERS_DIR
from search.encoders.towers import TextEncoder
from search.engine import Engine
from search.query import parse_terms
from search.server.batching import CoalescingKnn
from search.server.config import ServerConfig
from search.server.models import Result
from search.server.state import EngineHolder
from search.server.text_int8 import Int8TextEncoder

TEXTS = ["a red ball", "blue sky over a green field", "night", "a cafe at the sea", "sea", "x"]


def flat_knn(count: int = 3000, dim: int = 64, seed: int = 0):
    """An exact FAISS search over seeded unit vectors (ids 1..count), as the engine's `Knn`."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    index.add_with_ids(vectors, np.arange(1, count + 1, dtype=np.int64))

    def knn(queries: np.ndarray, k: int, allowed: np.ndarray | None):
        if allowed is None:
            return index.search(queries, k)
        selector = faiss.IDSelectorBatch(allowed)  # held here: `params.sel` is a bare pointer
        params = faiss.SearchParameters()
        params.sel = selector
        return index.search(queries, k, params=params)

    return knn, rng.standard_normal((12, dim)).astype(np.float32)


def test_concurrent_searches_share_one_call_and_get_what_they_would_alone():
    knn, queries = flat_knn()
    release, calls = threading.Event(), []

    def held(batch: np.ndarray, k: int, allowed: np.ndarray | None):
        calls.append((len(batch), k, allowed is not None))
        if len(calls) == 1:
            release.wait(20)  # the first call holds until the others queue behind it
        return knn(batch, k, allowed)

    coalescing = CoalescingKnn(held)
    ks = [10 if n % 3 else 4 for n in range(len(queries))]  # two ks: one call each
    with ThreadPoolExecutor(len(queries)) as pool:
        first = pool.submit(coalescing, queries[:1], ks[0], None)
        while not calls:
            time.sleep(0.005)
        rest = [pool.submit(coalescing, queries[n : n + 1], ks[n], None)
                for n in range(1, len(queries))]  # fmt: skip
        while len(coalescing.coalescer._waiting) < len(queries) - 1:
            time.sleep(0.005)
        release.set()
        answers = [first.result(), *(f.result() for f in rest)]
    assert calls[0] == (1, 4, False)
    assert sorted(calls[1:]) == [(3, 4, False), (8, 10, False)]  # eleven queries, two calls
    for n, (scores, ids) in enumerate(answers):
        alone = knn(queries[n : n + 1], ks[n], None)
        np.testing.assert_array_equal(scores, alone[0])  # bit for bit, not merely close
        np.testing.assert_array_equal(ids, alone[1])
        assert scores.shape == (1, ks[n])


def test_a_filtered_search_runs_on_its_own():
    knn, queries = flat_knn()
    calls = []

    def counted(batch: np.ndarray, k: int, allowed: np.ndarray | None):
        calls.append(allowed)
        return knn(batch, k, allowed)

    allowed = np.arange(1, 3001, 7, dtype=np.int64)
    scores, ids = CoalescingKnn(counted)(queries[:1], 5, allowed)
    assert calls[0] is allowed and set(ids[0]) <= set(allowed)
    np.testing.assert_array_equal(ids, knn(queries[:1], 5, allowed)[1])


def test_http_answers_equal_the_engines_when_many_are_in_flight(server, served):
    """Through the coalesced tower and vector search, and the pre-written JSON: each of many
    concurrent queries gets the engine's own answer, in the documented shape."""
    queries = TEXTS * 4

    def ask(text: str) -> dict:
        status, body = server.json("/api/search?" + urllib.parse.urlencode({"q": text, "k": 4}))
        assert status == 200, body
        return body

    with ThreadPoolExecutor(len(queries)) as pool:
        answers = list(pool.map(ask, queries))
    with Engine.open(served[0]) as engine:
        for text, answer in zip(queries, answers, strict=True):
            hits = engine.search(parse_terms(text.split()), k=4)
            assert [r["id"] for r in answer["results"]] == [h.id for h in hits]
            # batched tower runs move an embedding by ~1e-7, which may tip the 6th decimal
            scores = [r["score"] for r in answer["results"]]
            np.testing.assert_allclose(scores, [h.score for h in hits], atol=2e-6)
            assert [r["path"] for r in answer["results"]] == [os.fsdecode(h.path) for h in hits]
            for rank, result in enumerate(answer["results"], 1):
                assert list(result) == list(Result.model_fields)  # every field, in order
                assert result["rank"] == rank and result["itm_prob"] is None
                assert result["thumbnail"] == f"/api/images/{result['id']}/thumbnail"


def test_the_load_benchmark_keeps_one_connection_per_client(served, towers_cache, tmp_path):
    out = tmp_path / "serve.json"
    done = subprocess.run(
        [sys.executable, "bench/serve_bench.py", "--index", str(served[0]), "--clients", "3",
         "--seconds", "1.5", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(towers_cache)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["errors"] == 0 and run["queries"] > 3
    assert run["connections"] == 3  # keep-alive: no client had to reconnect
    assert run["server_cpu_ms_per_query"] > 0 and run["client_cpu_ms_per_query"] > 0


def test_the_int8_text_tower_is_made_once_and_embeds_near_fp32(served, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    towers = served[0] / TOWERS_DIR
    texts = TEXTS * 3
    fp32 = TextEncoder(towers).encode(texts)
    encoder = Int8TextEncoder(towers)
    int8 = encoder.encode(texts)
    (made,) = (tmp_path / "cache" / "photoseek" / "text-engines").iterdir()
    assert made.name == f"{Path(encoder.spec.text_file).stem}-int8.onnx"
    assert (fp32 * int8).sum(axis=1).min() > 0.99  # close, not equal: it is opt-in
    assert not np.allclose(fp32, int8, atol=1e-5)  # the int8 graph did run
    stamp = made.stat().st_mtime_ns
    np.testing.assert_array_equal(Int8TextEncoder(towers).encode(texts), int8)
    assert made.stat().st_mtime_ns == stamp  # the cached copy, not a second quantisation


def test_int8_embeddings_depend_on_their_batch_and_fp32_ones_do_not(served, tmp_path, monkeypatch):
    """Why int8 stays opt-in: its activations are quantised by the whole batch's range, so a
    query's embedding moves with the queries it is coalesced with; fp32's barely does."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    towers = served[0] / TOWERS_DIR
    texts = [*TEXTS, "a bright orange sunset over a calm grey sea, seen from a high cliff"]
    for kind, moves in ((TextEncoder, 1e-5), (Int8TextEncoder, None)):
        one = kind(towers)  # a second encoder for the batch: no embedding kept from the first
        alone = np.stack([one.encode([text])[0] for text in texts])
        together = kind(towers).encode(texts)
        gap = np.abs(alone - together).max()
        if moves is None:
            assert gap > 1e-4  # int8: the batch's range rescales every row
        else:
            assert gap < moves


def test_an_unknown_text_precision_is_refused():
    with pytest.raises(BadInput, match="unknown text precision 'int4'; known: fp32, int8"):
        ServerConfig(text_precision="int4").checked()


def test_a_server_asked_for_int8_text_searches_with_it(served, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    holder = EngineHolder(served[0], int8_text=True)
    holder.open()
    try:
        engine = holder.engine()
        assert isinstance(engine.encoders()[0], Int8TextEncoder)
        assert len(engine.search(parse_terms(["a", "red", "ball"]), k=3)) == 3
    finally:
        holder.close()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: a team of one either way")
def test_every_thread_that_searches_uses_one_openmp_thread(served):
    """OpenMP's thread count is a per-thread setting: set in the main thread alone, every
    request thread ran its FAISS searches on a team of one thread per core, spinning on the
    cores the other requests and the text tower need."""
    holder = EngineHolder(served[0])
    holder.open()
    try:
        engine = holder.engine()
        query = engine.encode_texts(["a red ball"])[0]
        seen: list[int] = []

        def search() -> None:
            assert len(engine.search_vector(query, k=3)) == 3
            seen.append(faiss.omp_get_max_threads())

        for _ in range(2):  # a request thread each: the setting is made in each
            thread = threading.Thread(target=search)
            thread.start()
            thread.join()
        assert seen == [1, 1]
    finally:
        holder.close()
