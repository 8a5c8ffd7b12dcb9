"""Opening a catalog on PostgreSQL: read-only transactions for readers, locks for migrations.

A read-only open sets `default_transaction_read_only` for its sessions, so the server refuses any
write, and reads at REPEATABLE READ: each read is one snapshot, as a SQLite reader's is. Writers
run at READ COMMITTED, where the catalog's one contended row (the generation counter, bumped by
an upsert that takes its row lock) serialises concurrent commits instead of failing them.
Several indexers may open one catalog at once, so a migration holds an advisory lock: the
second opener waits, then finds the step applied.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

__all__ = ["cannot_write", "checkpoint", "insert", "migration_lock", "open_engine"]

CONNECT_TIMEOUT_S = 10  # an unreachable server is an error after this, not a hang
_MIGRATION_LOCK = 0x70686F746F  # any constant the catalog's openers agree on ("photo")
# SQLSTATEs of a write the server refuses: a read-only transaction, a role without the right.
_REFUSED_WRITES = ("25006", "42501")


def open_engine(url: URL, read_only: bool) -> Engine:
    """An engine on the catalog database at `url` (no query runs yet)."""
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    isolation = "REPEATABLE READ" if read_only else "READ COMMITTED"
    return create_engine(url, connect_args=connect_args, isolation_level=isolation)


def migration_lock(conn: Connection) -> None:
    """Wait for other openers' migrations; held until this transaction ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def checkpoint(conn: Connection) -> None:
    """Nothing to fold: the server manages its own write-ahead log."""


def cannot_write(error: DBAPIError) -> bool:
    """Whether the server refused a write as such (not another failure)."""
    return getattr(error.orig, "sqlstate", None) in _REFUSED_WRITES
