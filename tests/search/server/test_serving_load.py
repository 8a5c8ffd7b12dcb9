"""Concurrent serving: text queries in flight together share tower runs and get the answers
they would alone; `--gpu` is refused at start where FAISS sees no GPU."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import assert_one_line_error, run
from indexer.errors import BadInput
from indexer.locations import TOWERS_DIR
from search.encoders.towers import TextEncoder
from search.server.batching import Coalescer, CoalescingTextEncoder, RecentEmbeddings
from search.server.config import ServerConfig


def rows_of(texts: list[str]) -> np.ndarray:
    """A row per text that says which text it came from."""
    return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def wait_until(check, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_callers_arriving_during_a_run_share_the_next_one():
    release, calls = threading.Event(), []

    def slow(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        release.wait(20)  # the first run holds until the others queue behind it
        return rows_of(texts)

    coalescer = Coalescer(slow)
    texts = [f"{chr(97 + i)}" * (i + 1) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(coalescer, [texts[0]])
        wait_until(lambda: len(calls) == 1)
        rest = [pool.submit(coalescer, [t]) for t in texts[1:]]
        wait_until(lambda: len(coalescer._waiting) == 7)
        release.set()
        answers = [first.result(), *(f.result() for f in rest)]
    assert calls == [texts[:1], texts[1:]]  # two tower runs for eight queries
    for text, rows in zip(texts, answers, strict=True):
        np.testing.assert_array_equal(rows, rows_of([text]))


def test_a_lone_caller_runs_at_once_and_batches_are_capped():
    release, calls = threading.Event(), []

    def run(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if texts == ["x"]:
            release.wait(20)
        return rows_of(texts)

    coalescer = Coalescer(run, max_batch=3)
    np.testing.assert_array_equal(coalescer(["ab", "c"]), rows_of(["ab", "c"]))
    assert calls == [["ab", "c"]] and coalescer.batches == 1
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(coalescer, ["x"])
        wait_until(lambda: len(calls) == 2)
        rest = [pool.submit(coalescer, [t, t]) for t in ("pp", "qq", "rr")]
        wait_until(lambda: len(coalescer._waiting) == 3)
        release.set()
        assert [len(f.result()) for f in rest] == [2, 2, 2] and len(first.result()) == 1
    # two jobs of two texts would be four, over the cap of three: each ran on its own
    assert sorted(map(tuple, calls[2:])) == [("pp", "pp"), ("qq", "qq"), ("rr", "rr")]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs():
    release, calls = threading.Event(), []

    def failing(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            release.wait(20)
            return rows_of(texts)
        if "bad" in texts:
            raise BadInput("no such text")
        return rows_of(texts)

    coalescer = Coalescer(failing)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(coalescer, ["ok"])
        wait_until(lambda: len(calls) == 1)
        bad = [pool.submit(coalescer, [t]) for t in ("bad", "fine")]
        wait_until(lambda: len(coalescer._waiting) == 2)
        release.set()
        assert len(first.result()) == 1
        for future in bad:
            with pytest.raises(BadInput, match="no such text"):
                future.result()
    np.testing.assert_array_equal(coalescer(["after"]), rows_of(["after"]))


def test_concurrent_encodes_equal_lone_ones_and_share_runs(served):
    towers = served[0] / TOWERS_DIR
    texts = [f"a {colour} ball on {place}" for colour in ("red", "blue", "green", "pale")
             for place in ("grass", "a very long sandy beach at dusk", "snow")]  # fmt: skip
    rounds = [[f"{text} {n}" for text in texts] for n in range(3)]  # new texts: none recalled
    encoder = CoalescingTextEncoder(towers)
    encoder.encode("warm")
    start = threading.Barrier(len(texts))

    def encode(text: str) -> np.ndarray:
        start.wait()
        return encoder.encode([text])

    for asked in rounds:
        alone = np.concatenate([TextEncoder(towers).encode([t]) for t in asked])
        with ThreadPoolExecutor(len(asked)) as pool:
            together = np.concatenate(list(pool.map(encode, asked)))
        np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.coalescer.batches < 1 + 3 * len(texts)  # some queries shared a run


def test_a_recent_text_is_not_embedded_again(served):
    """The page asks for each next page of results with the same query text."""
    encoder = CoalescingTextEncoder(served[0] / TOWERS_DIR)
    first = encoder.encode(["a red ball", "night"])
    runs = encoder.coalescer.batches
    again = encoder.encode(["night", "a red ball", "night"])
    assert encoder.coalescer.batches == runs  # all three from memory
    np.testing.assert_array_equal(again, first[[1, 0, 1]])
    again[:] = 0  # the caller's copy: what is remembered stays
    mixed = encoder.encode(["sea", "a red ball"])
    assert encoder.coalescer.batches == runs + 1  # one run, for "sea" alone
    np.testing.assert_array_equal(mixed[1], first[0])
    np.testing.assert_allclose(mixed[0], TextEncoder(served[0] / TOWERS_DIR).encode("sea")[0],
                               atol=1e-5)  # fmt: skip
    assert encoder.encode([]).shape == (0, first.shape[1])
    small = RecentEmbeddings(size=2)
    for n in range(3):
        small.put(str(n), first[0])
    assert small.get("0") is None and small.get("2") is not None  # the oldest went first


def test_concurrent_http_searches_answer_as_lone_ones(server):
    queries = [f"photo {word}" for word in ("red", "sky", "field", "night", "sea", "ball")] * 3
    alone = {q: server.json(f"/api/search?q={q.replace(' ', '+')}&k=6")[1] for q in queries}

    def ask(q: str) -> tuple[str, list[int]]:
        status, body = server.json(f"/api/search?q={q.replace(' ', '+')}&k=6")
        assert status == 200, body
        return q, [r["id"] for r in body["results"]]

    with ThreadPoolExecutor(len(queries)) as pool:
        for q, ids in pool.map(ask, queries):
            assert ids == [r["id"] for r in alone[q]["results"]], q


def test_gpu_is_refused_at_start_without_a_gpu_faiss(served):
    import faiss

    if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        pytest.skip("FAISS here sees a GPU")
    with pytest.raises(BadInput, match="--gpu"):
        ServerConfig(index_dir=served[0], gpu=True).checked()
    result = run("serve", "--index", str(served[0]), "--port", "0", "--gpu")
    assert_one_line_error(result, "--gpu: FAISS sees no GPU")
    assert result.stdout == ""
