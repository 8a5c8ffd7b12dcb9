"""Searching while a real `photoseek index` re-indexes a grown folder: no request fails, and
the server serves the new photos once the run has finished, without a restart."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from serving import build_index, scene, start_server

from helpers import PHOTOSEEK
from indexer.pipeline import IndexOptions, run_index
from search.server.batching import CoalescingTextEncoder
from search.server.state import EngineHolder

GROWN = 40  # photos added: with --batch-size 8, five commits while the clients query


def test_searches_during_a_running_reindex_never_fail(tmp_path, tiny_checkpoint, towers_cache):
    photos, index = tmp_path / "photos", tmp_path / "index"
    build_index(photos, index, tiny_checkpoint, towers_cache, 3)
    running = start_server(index, towers_cache)
    try:
        for i in range(GROWN):
            scene(100 + i).save(photos / f"grown {i:02d}.png")
        indexer = subprocess.Popen(
            [*PHOTOSEEK, "index", str(photos), "--index", str(index), "--model", tiny_checkpoint,
             "--batch-size", "8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "XDG_CACHE_HOME": str(towers_cache)},
        )  # fmt: skip
        answers: list[tuple[int, bool, str]] = []  # (status, indexer still running, error)

        def client(path: str) -> None:
            while indexer.poll() is None:
                status, body = running.json(path)
                answers.append((status, indexer.poll() is None, str(body.get("error", ""))))

        paths = ["/api/search?q=a+photo&k=20", "/api/search?q=red&k=5&glob=grown*",
                 "/api/status", "/api/search?q=sky&k=50"]  # fmt: skip
        clients = [threading.Thread(target=client, args=(path,)) for path in paths]
        for thread in clients:
            thread.start()
        _, stderr = indexer.communicate(timeout=300)
        for thread in clients:
            thread.join(timeout=60)
        assert indexer.returncode == 0, stderr
        failed = [a for a in answers if a[0] != 200]
        assert not failed, failed[:5]
        assert sum(during for _, during, _ in answers) >= 4  # queries did meet the running indexer
        _, after = running.json("/api/search?q=a+photo&k=100")
        names = {os.path.basename(r["path"]) for r in after["results"]}
        assert len(names) == 3 + GROWN and f"grown {GROWN - 1:02d}.png" in names
        assert running.json("/api/status")[1]["generation"] >= 2
    finally:
        running.stop()


def test_a_reopened_engine_keeps_the_loaded_encoders(tmp_path, tiny_checkpoint, towers_cache):
    """A re-index that leaves the towers as they were reopens the catalog and vectors only:
    loading the towers again at every commit took seconds of CPU from the queries."""
    photos, index = tmp_path / "photos", tmp_path / "index"
    build_index(photos, index, tiny_checkpoint, towers_cache, 2)
    holder = EngineHolder(index)
    holder.open()
    try:
        first = holder.engine()
        text = first.encoders()[0]
        assert isinstance(text, CoalescingTextEncoder)  # concurrent queries share tower runs
        first.encode_texts(["warm"])
        scene(9).save(photos / "another.png")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("XDG_CACHE_HOME", str(towers_cache))
            run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
        second = holder.engine()
        assert second is not first and holder.generation == 2
        assert second.encoders() == first.encoders()
        assert len(second.search_vector(second.encode_texts(["x"])[0], k=10)) == 3
    finally:
        holder.close()
