"""Waiting for another writer's lock on a SQLite catalog in steps that Ctrl-C can cut short.

SQLite waits for a lock inside its own C code (`busy_timeout`), where Python cannot act on a
signal: Ctrl-C while an indexer waited on a busy catalog went unseen until the whole 10 s wait
was over, and then, as often as not, the "busy" error won over the interrupt. So a writer's
connection lets SQLite wait only `STEP_MS` at a time and retries a statement refused with plain
SQLITE_BUSY (a lock it could not get yet, so nothing of the statement ran) until `WAIT_S` have
passed; between steps Python runs, and a pending Ctrl-C raises there. Other refusals (a stale
snapshot, a locked table) are raised at once, as before.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

WAIT_S = 10.0  # how long a writer waits for another's lock in all, as before
STEP_MS = 100  # each of those waits inside SQLite: how soon Ctrl-C is seen
_BUSY = 5  # SQLITE_BUSY, without an extended code


class PatientCursor(sqlite3.Cursor):
    """A cursor whose statements wait for a busy catalog in interruptible steps."""

    def execute(self, sql: str, parameters: Any = (), /) -> PatientCursor:
        run = lambda: super(PatientCursor, self).execute(sql, parameters)  # noqa: E731
        return _patiently(run, self._wait_s())

    def executemany(self, sql: str, parameters: Any, /) -> PatientCursor:
        rows = list(parameters)  # a retry must see the same rows again
        run = lambda: super(PatientCursor, self).executemany(sql, rows)  # noqa: E731
        return _patiently(run, self._wait_s())

    def _wait_s(self) -> float:
        """Its connection's wait (`PatientConnection.wait_s`), else the catalog writer's."""
        return float(getattr(self.connection, "wait_s", WAIT_S))


class PatientConnection(sqlite3.Connection):
    """A connection (`sqlite3.connect(..., factory=PatientConnection)`) whose cursors wait in
    steps; SQLite's own wait is set to one step when it opens."""

    wait_s = WAIT_S  # how long its statements wait for a lock in all

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        super().execute(f"PRAGMA busy_timeout={STEP_MS}")

    def cursor(self, factory: type[sqlite3.Cursor] = PatientCursor) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory)

    # The shortcuts too: sqlite3's own make a plain cursor, not through `cursor` above.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)


def _patiently(run: Any, wait_s: float) -> Any:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return run()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != _BUSY or time.monotonic() >= deadline:
                raise
