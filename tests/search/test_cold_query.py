"""The cold query path (`photoseek search`: the sqlite3 reader, the Flat file scanned with numpy,
the text tower from its saved optimised graph without prepacked weights) answers exactly as the
long-lived `Engine` path does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, write_image
from indexer.pipeline import IndexOptions, run_index
from search.filters import Filters
from search.hits import Hit
from search.query import parse_terms
from search.wiring import Preload, build_engine

PLAIN = ["a red square"]
WEIGHTED = ["a", "red", "square", "+", "2:sunset", "-", "people"]
TOLERANCE = 1e-6


@pytest.fixture
def index(tmp_path: Path, photos: Path, tiny_checkpoint: str) -> Path:
    directory = tmp_path / "idx"
    run_index(directory, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    return directory


def assert_same(got: list[Hit], want: list[Hit], tolerance: float = TOLERANCE) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    assert [h.path for h in got] == [h.path for h in want]
    assert all(abs(a.score - b.score) <= tolerance for a, b in zip(got, want, strict=True))


def test_the_cold_path_answers_as_the_engine_does(index, photos):
    trip = str(photos / "trip 2024")
    cold_engine = build_engine(index, preload=Preload(text=True), light=True, once=True)
    with build_engine(index) as full, cold_engine as cold:
        assert cold.store.flat is not None and full.store.flat is None
        text, _, _ = cold.encoders()
        assert text is not None and text.once
        for words in (PLAIN, WEIGHTED):
            for k in (1, 3, 50):
                assert_same(
                    cold.search(parse_terms(words), k=k), full.search(parse_terms(words), k=k)
                )
        with build_engine(index, once=True) as filtered:  # filters: the SQLAlchemy catalog
            assert filtered.store.flat is not None
            for filters in (Filters(glob="img*"), Filters(under=(trip,)), Filters(min_width=1)):
                terms = parse_terms(WEIGHTED)
                want = full.search(terms, k=4, filters=filters)
                assert want
                assert_same(filtered.search(terms, k=4, filters=filters), want)


def cli_search(index: Path, *words: str) -> list[dict]:
    args = [sys.executable, "-c", "from search.cli import main; main()", "search", *words,
            "--index", str(index), "-k", "50", "--json"]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_cli_matches(index: Path, words: list[str], *options: str, **filters: object) -> None:
    got = cli_search(index, *words, *options)
    with build_engine(index) as full:
        want = full.search(parse_terms(words), k=50, filters=Filters(**filters))  # type: ignore[arg-type]
    assert [g["id"] for g in got] == [h.id for h in want]
    # The JSON rounds scores to 6 places: half a unit more.
    assert all(
        abs(g["score"] - h.score) <= TOLERANCE + 5e-7 for g, h in zip(got, want, strict=True)
    )


def test_a_cold_cli_query_answers_as_the_engine_does(index, photos):
    assert_cli_matches(index, PLAIN)
    assert_cli_matches(index, WEIGHTED)
    assert_cli_matches(index, WEIGHTED, "--glob", "img*", glob="img*")


# A real SIGKILL as the indexer replaces the vector file (or, after it, its record): the child
# replaces os.replace with one that kills the process just before the rename onto `name`.
KILL_BEFORE = """
import os, signal, sys
_replace, name = os.replace, sys.argv.pop(1)
def _replace_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = _replace_or_die
from search.cli import main
main()
"""


@pytest.mark.parametrize("name", ["vectors.faiss", "vectors.json"])
def test_a_vector_file_left_by_a_killed_indexer_is_read_with_the_rows_since(
    index, photos, tiny_checkpoint, name
):
    for i in range(3):
        write_image(photos / f"later{i}.jpg", seed=40 + i)
    args = [sys.executable, "-c", KILL_BEFORE, name, "index", str(photos), "--index", str(index),
            "--model", tiny_checkpoint, "--json"]  # fmt: skip
    killed = subprocess.run(args, cwd=REPO, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    with build_engine(index) as full, build_engine(index, light=True, once=True) as cold:
        assert cold.store.flat is not None
        live = set(cold.catalog.live_ids().tolist())
        hits = cold.search(parse_terms(PLAIN), k=100)
        assert {h.id for h in hits} == live  # the rows the file lacks are searched too
        if name == "vectors.faiss":  # the old file: without the new photos
            assert len(live) > len(cold.store)
        assert_same(hits, full.search(parse_terms(PLAIN), k=100))
    assert_cli_matches(index, PLAIN)
