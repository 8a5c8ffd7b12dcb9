"""Opening a catalog's SQLite file: exact URLs, real transactions, read-only opens.

The SQLite specifics live here (pragmas, URI filenames, IMMEDIATE transactions, the WAL
checkpoint); `indexer.store.engines` picks this module or `indexer.store.postgres` by URL. A
read-only open (search, status, errors, roots) never writes and never migrates: SQLite's
`mode=ro` (or `immutable=1` on read-only media, where no writer can be at work) plus
`query_only`, so it works on a read-only disk and never waits on an indexer's write lock.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from indexer.store.layout import READ_PRAGMAS, read_only_uri

__all__ = ["cannot_write", "checkpoint", "insert", "migration_lock", "open_engine"]


def open_engine(path: Path, read_only: bool) -> Engine:
    """An engine on the catalog file at `path` (no query runs yet)."""
    if not read_only:
        engine = create_engine(URL.create("sqlite", database=str(path)))
    else:
        database, query = read_only_uri(path)  # shared with the sqlite3 reader
        engine = create_engine(
            URL.create("sqlite", database=database, query={**query, "uri": "true"})
        )
    event.listen(engine, "connect", _read_pragmas if read_only else _write_pragmas)
    event.listen(engine, "begin", _begin)
    return engine


def _autocommit(dbapi_conn) -> None:  # noqa: ANN001 - a DB-API connection
    # pysqlite would otherwise run DDL outside any transaction and BEGIN only before DML: take
    # over, so `engine.begin()` is one real transaction (a migration is atomic with its record).
    dbapi_conn.isolation_level = None


def _write_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - SQLAlchemy event signature
    _autocommit(dbapi_conn)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _read_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - SQLAlchemy event signature
    _autocommit(dbapi_conn)
    cursor = dbapi_conn.cursor()
    for pragma in READ_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting on busy_timeout), so a transaction that
    # reads and then writes never fails half-way on a lock upgrade.
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def migration_lock(conn: Connection) -> None:
    """Nothing more to take: a migration's transaction is IMMEDIATE, SQLite's write lock."""


def checkpoint(conn: Connection) -> None:
    """Fold the WAL into the database file, so the directory is self-contained at rest."""
    conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def cannot_write(error: DBAPIError) -> bool:
    """Whether SQLite refused a write because the file or its folder is read-only."""
    return "readonly" in str(error.orig) or "unable to open" in str(error.orig)
