"""Opening a catalog on PostgreSQL: read-only transactions for readers, locks for migrations.

A read-only open sets `default_transaction_read_only` for its sessions, so the server refuses any
write, and reads at REPEATABLE READ: each read is one snapshot, as a SQLite reader's is. Writers
run at READ COMMITTED, where the catalog's one contended row (the generation counter, bumped by
an upsert that takes its row lock) serialises concurrent commits instead of failing them.
Several indexers may open one catalog at once, so a migration holds an advisory lock: the
second opener waits, then finds the step applied.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import Connection, Engine, bindparam, create_engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

__all__ = ["cannot_write", "checkpoint", "create_keyword_index", "has_keyword_index", "insert",
           "keyword_ranking", "migration_lock", "open_engine"]  # fmt: skip

CONNECT_TIMEOUT_S = 10  # an unreachable server is an error after this, not a hang
_MIGRATION_LOCK = 0x70686F746F  # any constant the catalog's openers agree on ("photo")
# SQLSTATEs of a write the server refuses: a read-only transaction, a role without the right.
_REFUSED_WRITES = ("25006", "42501")

# The keyword index: a generated tsvector of each image's names and caption ('simple': no
# stemming, as SQLite's FTS5 has none), under a GIN index; the server keeps it in step.
_KEYWORD_DDL = (
    "ALTER TABLE image_text ADD COLUMN IF NOT EXISTS words tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple', names || ' ' || coalesce(caption, ''))) STORED",
    "CREATE INDEX IF NOT EXISTS image_text_words ON image_text USING gin (words)",
)
# Any of the words (plainto_tsquery's AND made an OR), best ts_rank first.
_RANKING = text(
    "WITH q AS (SELECT replace(plainto_tsquery('simple', :words)::text, ' & ', ' | ')::tsquery "
    "AS query) SELECT t.image_id FROM image_text t JOIN images i ON i.id = t.image_id, q "
    "WHERE t.words @@ q.query AND i.status IN :statuses "
    "ORDER BY ts_rank(t.words, q.query) DESC, t.image_id"
).bindparams(bindparam("statuses", expanding=True))


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


def create_keyword_index(conn: Connection) -> None:
    """The tsvector column and its GIN index."""
    for statement in _KEYWORD_DDL:
        conn.exec_driver_sql(statement)


def has_keyword_index(conn: Connection) -> bool:
    """Always, once migrated: the server needs no optional module for it."""
    return True


def keyword_ranking(
    conn: Connection, words: Sequence[str], statuses: Sequence[str]
) -> Iterator[int]:
    """Ids of the images in `statuses` whose names or caption hold any of `words`, best
    first. The words are one bound parameter that plainto_tsquery parses: never syntax."""
    rows = conn.execute(_RANKING, {"words": " ".join(words), "statuses": list(statuses)})
    return (image_id for (image_id,) in rows)
