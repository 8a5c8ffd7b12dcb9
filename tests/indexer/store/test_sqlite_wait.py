"""A writer waits for another's lock on a real SQLite file in short steps: it still gets the
lock when the other lets go within the wait, gives up after it, and raises other errors at once
(Ctrl-C during the wait: tests/search/cli/test_cli_failures.py, with a real subprocess)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from indexer.store import sqlite_wait
from indexer.store.sqlite_wait import PatientConnection


@pytest.fixture
def locked(tmp_path):
    """A WAL database whose write lock another connection holds; released by the caller."""
    path = tmp_path / "c.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    yield path, holder
    holder.close()


class Brief(PatientConnection):
    wait_s = 0.5  # gives up sooner than a catalog's writer, for a short test


def patient(path, factory: type[PatientConnection] = PatientConnection) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, factory=factory)


def test_the_writer_gets_the_lock_once_the_other_lets_go(locked):
    path, holder = locked
    threading.Timer(5 * sqlite_wait.STEP_MS / 1000, holder.execute, ["ROLLBACK"]).start()
    conn = patient(path)
    started = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")  # waited several of SQLite's own steps
    assert time.monotonic() - started >= 4 * sqlite_wait.STEP_MS / 1000
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_the_writer_gives_up_after_the_wait(locked):
    conn = patient(locked[0], Brief)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        conn.executemany("INSERT INTO t VALUES (?)", iter([(1,), (2,)]))
    assert 0.5 <= time.monotonic() - started < 5


def test_other_errors_are_raised_at_once(tmp_path):
    conn = patient(tmp_path / "c.sqlite")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        conn.execute("SELECT * FROM missing")
    assert time.monotonic() - started < 1
