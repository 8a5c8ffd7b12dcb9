"""Searches while a real `photoseek index` process commits batch after batch.

A search must never fail once a batch is committed, never return a row that is not live, and
see what was committed before it began; at the end the vector file holds every image.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from helpers import PHOTOSEEK, consistency, photo_folder
from indexer.errors import PhotoseekError
from indexer.store.catalog import Catalog
from search.engine import Engine
from search.query import Term
from search.tools.status import index_status
from search.wiring import build_engine

K = 40


def committed(index: Path) -> set[int]:
    """The live row ids committed so far (none before the catalog exists)."""
    if not (index / "catalog.sqlite").exists():
        return set()
    try:
        catalog = Catalog.open(index, read_only=True)
    except Exception:  # created but not yet migrated: nothing committed
        return set()
    try:
        return set(catalog.live_ids().tolist())
    finally:
        catalog.close()


def check(engine: Engine, index: Path, before: set[int]) -> int:
    """One search: it sees what was committed before it, and only live rows."""
    hits = engine.search([Term(text="a photo")], k=K)
    assert len(hits) >= min(K, len(before))
    assert {h.id for h in hits} <= committed(index)
    return len(hits)


def test_searches_while_a_real_index_runs(tmp_path, tiny_checkpoint):
    total = 240
    root = photo_folder(tmp_path, total, size=(64, 48))
    index = tmp_path / "idx"
    args = ["index", str(root), "--index", str(index), "--model", tiny_checkpoint]
    proc = subprocess.Popen(
        [*PHOTOSEEK, *args, "--batch-size", "4", "--workers", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    searches, held = 0, None
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and searches < 300 and time.monotonic() < deadline:
            before = committed(index)
            try:
                engine = build_engine(index)  # a fresh open, as every CLI search makes
            except PhotoseekError:  # no index yet (or one being created): a one-line error
                assert not before, "a committed batch must be searchable"
                time.sleep(0.02)
                continue
            with engine:
                searches += bool(check(engine, index, before))
            held = held or build_engine(index)  # and one long-lived engine, as the server's
            check(held, index, before)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["added"] == total
    assert searches >= 3, "the run ended before the test could search it"
    assert held is not None and len(held.search([Term(text="a photo")], k=total)) == total
    held.close()
    consistency(index)
    status = index_status(index)
    assert status["vectors"] == status["images"] == total
