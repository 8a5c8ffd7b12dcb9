"""Indexing into and searching from a catalog on a real PostgreSQL server, in process and
through real `photoseek` subprocesses: the same answers as SQLite, URLs recorded without their
password, concurrent indexers on different roots, searches while one writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pg_server import PASSWORD, PgServer
from sqlalchemy import create_engine, text

from helpers import PHOTOSEEK, assert_one_line_error, photo_folder, run
from indexer.errors import PhotoseekError
from indexer.pipeline import IndexOptions, run_index
from indexer.store.catalog import Catalog
from indexer.store.catalog_url import CATALOG_ENV, URL_FILE
from search.filters import Filters
from search.query import Term
from search.wiring import build_engine

QUERIES = ("a photo", "red noise", "a dog on a beach")


def _answers(index: Path, photos: Path, k: int = 10) -> list[list[tuple[bytes, float]]]:
    """Plain queries (the light path where it applies), then filtered ones (SQL on the catalog)."""
    filters = [Filters(under=(str(photos / "trip 2024"),)), Filters(min_width=50, glob="img*"),
               Filters(camera="a_%")]  # fmt: skip
    with build_engine(index, light=True) as engine:
        hits = [engine.search([Term(text=q)], k=k) for q in QUERIES]
    with build_engine(index) as engine:
        hits += [engine.search([Term(text=QUERIES[0])], k=k, filters=f) for f in filters]
    return [[(h.path, round(h.score, 5)) for h in found] for found in hits]


def _rows(index: Path) -> list[tuple]:
    catalog = Catalog.open(index, read_only=True)
    try:
        return [(r.path, r.status, r.size, r.content_hash, r.width, r.error)
                for r in catalog.all_rows()]  # fmt: skip
    finally:
        catalog.close()


def test_postgres_gives_the_same_answers_as_sqlite(tmp_path, photos, tiny_checkpoint, pg_url,
                                                    monkeypatch):  # fmt: skip
    lite, pg = tmp_path / "lite", tmp_path / "pg"
    options = IndexOptions(roots=(photos,), model=tiny_checkpoint, workers=1)
    expected = run_index(lite, options).counts()
    monkeypatch.setenv(CATALOG_ENV, pg_url)
    summary = run_index(pg, options).counts()
    assert {**summary, "seconds": 0} == {**expected, "seconds": 0}
    assert summary["added"] == 9 and summary["reused"] == 1 and summary["errors"] == 1
    assert not (pg / "catalog.sqlite").exists() and (pg / URL_FILE).is_file()
    monkeypatch.delenv(CATALOG_ENV)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # the recorded URL has none
    assert _rows(pg) == _rows(lite)
    answers = _answers(pg, photos)  # on PG, `light` falls back to the full catalog
    assert answers == _answers(lite, photos)
    assert [len(a) for a in answers[-3:]] == [2, 6, 0]
    again = run_index(pg, IndexOptions(model=tiny_checkpoint))  # found without --catalog
    assert again.unchanged == 10 and again.added == 0


def test_the_cli_records_the_url_without_the_password(tmp_path, photos, tiny_checkpoint, pg_url):
    index = tmp_path / "idx"
    done = run("--catalog", pg_url, "index", str(photos), "--index", str(index), "--model",
               tiny_checkpoint, "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 9  # and a byte-identical copy, reused
    assert "catalog.sqlite" not in os.listdir(index)
    for path in index.rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path
    refused = run("status", "--index", str(index), "--json")  # no password anywhere
    assert_one_line_error(refused, "no password supplied")
    found = run("status", "--index", str(index), "--json", env={"PGPASSWORD": PASSWORD})
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["images"] == 9
    # --catalog after the command, as on any command; also for a folder that records nothing.
    hits = run("search", "a photo", "--index", str(index), "--catalog", pg_url, "--json")
    assert hits.returncode == 0, hits.stderr
    assert len(json.loads(hits.stdout)) == 9
    elsewhere = tmp_path / "elsewhere"
    roots = run("roots", "--catalog", pg_url, "--index", str(elsewhere), "--json")
    assert roots.returncode == 0, roots.stderr
    assert [r["path"] for r in json.loads(roots.stdout)] == [str(photos)]
    status = run(f"--catalog={pg_url}", "status", "--index", str(index), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["images"] == 9


def test_bad_urls_and_unreachable_servers_fail_in_one_line(tmp_path, photos, pg_server: PgServer):
    index = str(tmp_path / "idx")
    assert_one_line_error(run("--catalog", "not a url", "status", "--index", index),
                          "not a database URL")  # fmt: skip
    assert_one_line_error(run("--catalog", "oracle://u@h/db", "status", "--index", index),
                          "SQLite or PostgreSQL")  # fmt: skip
    gone = f"postgresql+psycopg://photo:{PASSWORD}@/db?host={tmp_path}/nothing-listens-here"
    for args in (("status",), ("search", "x"), ("roots",), ("index", str(photos))):
        failed = run("--catalog", gone, *args, "--index", index)
        assert_one_line_error(failed, "cannot open the catalog")
        assert PASSWORD not in failed.stderr
    missing = pg_server.url("no_such_database")
    assert_one_line_error(run("--catalog", missing, "status", "--index", index),
                          "does not exist")  # fmt: skip


def _index_process(root: Path, index: Path, model: str, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*PHOTOSEEK, "--catalog", url, "index", str(root), "--index", str(index), "--model", model,
         "--batch-size", "3", "--workers", "1", "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _rows_under(root: Path, folder: Path, url: str) -> int:
    catalog = Catalog.open(folder, read_only=True, url=url)
    try:
        return sum(catalog.counts_under(os.fsencode(root.resolve())).values())
    finally:
        catalog.close()


def _first_to_commit(procs: list[subprocess.Popen[bytes]], roots: list[Path], folder: Path,
                     url: str) -> int:  # fmt: skip
    """Which of the two indexers committed rows first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for i, root in enumerate(roots):
            if _rows_under(root, folder, url) or procs[i].poll() is not None:
                return i
        time.sleep(0.02)
    raise AssertionError("neither indexer committed a row")


def _wait_for_rows(proc: subprocess.Popen[bytes], root: Path, folder: Path, url: str) -> None:
    """Until `proc` has committed rows under `root`, for at most 20 s: the paused indexer may
    have been stopped inside a commit, holding the row lock the other's commit needs, and then
    only resuming it lets both go on (the test's overlap check still decides)."""
    deadline = time.monotonic() + 20
    while not _rows_under(root, folder, url) and proc.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def test_two_indexers_on_different_roots_write_one_catalog_at_once(
    tmp_path, tiny_checkpoint, pg_url, monkeypatch
):
    count = 45
    roots = []
    for name, seed in (("a", 0), ("b", 500)):
        (tmp_path / name).mkdir()
        roots.append(photo_folder(tmp_path / name, count, seed=seed))
    for root in roots:
        (root / "broken.jpg").write_text("not a picture")
    Catalog.open(tmp_path / "first", url=pg_url).close()  # both start on a migrated catalog
    indexes = [tmp_path / "ia", tmp_path / "ib"]  # one folder each: their own vector files
    procs = [
        _index_process(r, i, tiny_checkpoint, pg_url) for r, i in zip(roots, indexes, strict=True)
    ]
    # Make the runs overlap whatever the machine's speed: the first to commit waits, paused,
    # until the other has committed too (or for a bounded time).
    first = _first_to_commit(procs, roots, tmp_path / "first", pg_url)
    other = 1 - first
    procs[first].send_signal(signal.SIGSTOP)
    try:
        _wait_for_rows(procs[other], roots[other], tmp_path / "first", pg_url)
    finally:
        procs[first].send_signal(signal.SIGCONT)
    outputs = [p.communicate(timeout=400) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["added"] == count and json.loads(out)["errors"] == 1
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    catalog = Catalog.open(indexes[0], read_only=True)
    rows = catalog.all_rows()
    assert catalog.counts() == {"images": 2 * count, "errors": 2, "offline": 0}
    assert len({r.path for r in rows}) == len(rows) == 2 * count + 2
    assert sorted(p for p in catalog.root_paths()) == sorted(os.fsencode(r) for r in roots)
    spans = [[r.indexed_at for r in rows if r.path.startswith(os.fsencode(root))] for root in roots]
    assert max(map(min, spans)) < min(map(max, spans)), "the two runs did not overlap"
    live = catalog.live_ids()
    catalog.close()
    for index in indexes:  # each folder's searches see every committed row of both roots
        with build_engine(index) as engine:
            hits = engine.search([Term(text="a photo")], k=3 * count)
        assert sorted(h.id for h in hits) == sorted(live.tolist())


def test_searches_while_an_indexer_writes_a_postgres_catalog(tmp_path, tiny_checkpoint, pg_url,
                                                             monkeypatch):  # fmt: skip
    total = 90
    root = photo_folder(tmp_path, total, size=(64, 48))
    index = tmp_path / "idx"
    proc = _index_process(root, index, tiny_checkpoint, pg_url)
    monkeypatch.setenv(CATALOG_ENV, pg_url)
    searches, seen = 0, 0
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # The indexer is paused while the test searches and runs a moment between searches,
            # so a fast indexer on an idle machine and slow searches on a loaded one still meet.
            proc.send_signal(signal.SIGSTOP)
            try:
                found = _search_once(index, total)
            finally:
                proc.send_signal(signal.SIGCONT)
            if found is not None:
                before, ids, after = found
                assert before <= ids <= after, "a search sees what was committed before it began"
                searches, seen = searches + 1, max(seen, len(ids))
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["added"] == total
    assert searches >= 3 and 0 < seen, "the run ended before the test could search it"
    with build_engine(index) as engine:
        assert len(engine.search([Term(text="a photo")], k=total)) == total


def _search_once(index: Path, total: int) -> tuple[set[int], set[int], set[int]] | None:
    """The ids live before a search, those it found, and those live after it; None while the
    index is not searchable yet."""
    try:
        catalog = Catalog.open(index, read_only=True)
    except PhotoseekError:  # not created or not migrated yet
        return None
    before = set(catalog.live_ids().tolist())
    catalog.close()
    try:
        engine = build_engine(index)
    except PhotoseekError:  # the query towers are not installed yet
        return None
    with engine:
        hits = engine.search([Term(text="a photo")], k=total)
        after = set(engine.catalog.live_ids().tolist())
    return before, {h.id for h in hits}, after


@pytest.mark.parametrize("option", [["--catalog", "pg://u@/db"], ["--catalog=pg://u@/db"]])
def test_the_global_option_moves_from_after_the_command(option):
    from search.cli.options import hoist_catalog

    moved = hoist_catalog(["search", "q", *option, "-k", "3", "--", "--catalog", "kept"])
    assert moved == [*option, "search", "q", "-k", "3", "--", "--catalog", "kept"]


def test_a_database_error_mid_command_is_one_line(tmp_path, pg_url):
    Catalog.open(tmp_path, url=pg_url).close()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE images CASCADE"))  # damaged behind photoseek's back
    engine.dispose()
    failed = run("status", "--index", str(tmp_path), env={"PGPASSWORD": PASSWORD})
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photoseek: error: the index catalog failed")
    assert '"images" does not exist' in lines[0]
