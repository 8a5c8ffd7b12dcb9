"""Opening the catalog's SQLite file: exact URLs, real transactions, read-only opens, migrations.

A write open migrates the catalog, each migration in its own transaction with its record. A
read-only open (search, status, errors, roots) never writes and never migrates: SQLite's
`mode=ro` (or `immutable=1` on read-only media, where no writer can be at work) plus
`query_only`, so it works on a read-only disk and never waits on an indexer's write lock.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select
from sqlalchemy.engine import URL

from indexer.errors import PhotoseekError
from indexer.store.layout import (
    READ_PRAGMAS,
    CatalogNeedsUpgrade,
    CatalogTooNew,
    check_applied,
    read_only_uri,
)
from indexer.store.schema import MIGRATIONS, meta, migrations

__all__ = ["CatalogNeedsUpgrade", "CatalogTooNew", "IndexReadOnly", "check_schema", "migrate",
           "open_engine"]  # fmt: skip


class IndexReadOnly(PhotoseekError):
    """A write was asked of a catalog opened read-only, or on read-only media."""


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


def applied_migrations(conn: Connection) -> set[str]:
    has_table = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
    ).first()
    return set(conn.scalars(select(migrations.c.name))) if has_table else set()


def check_schema(conn: Connection, path: Path, read_only: bool) -> None:
    """Refuse a catalog from a newer photoseek; for a read-only open, also one that is older."""
    check_applied(applied_migrations(conn), path, read_only)


def migrate(engine: Engine, path: Path) -> None:
    """Run the missing migrations, each in one transaction with its record."""
    with engine.connect().execution_options(sqlite_immediate=True) as conn:
        with conn.begin():
            migrations.create(conn, checkfirst=True)
            check_schema(conn, path, read_only=False)
        for number, (name, step) in enumerate(MIGRATIONS, 1):
            with conn.begin():
                if name in applied_migrations(conn):  # re-read: another opener may have run it
                    continue
                step(conn)
                conn.execute(insert(migrations).values(name=name, applied_at=time.time()))
                conn.execute(delete(meta).where(meta.c.key == "schema_version"))
                conn.execute(insert(meta).values(key="schema_version", value=str(number)))
