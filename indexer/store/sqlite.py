"""Opening a catalog's SQLite file: exact URLs, real transactions, read-only opens.

The SQLite specifics live here (pragmas, URI filenames, IMMEDIATE transactions, the WAL
checkpoint); `indexer.store.engines` picks this module or `indexer.store.postgres` by URL. A
read-only open (search, status, errors, roots) never writes and never migrates: SQLite's
`mode=ro` (or `immutable=1` on read-only media, where no writer can be at work) plus
`query_only`, so it works on a read-only disk and never waits on an indexer's write lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, text
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from indexer.store.layout import READ_PRAGMAS, read_only_uri
from indexer.store.sqlite_wait import PatientConnection

__all__ = ["cannot_write", "checkpoint", "create_keyword_index", "has_keyword_index", "insert",
           "keyword_ranking", "migration_lock", "open_engine"]  # fmt: skip

log = logging.getLogger(__name__)

# The keyword index: FTS5 over `image_text` (external content, no second copy of the text),
# kept in step by triggers, so every write of the table, and the cascade that drops a row with
# its image, updates it in the same transaction; no writer can forget it.
KEYWORD_TABLE = "image_text_fts"
_KEYWORD_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {KEYWORD_TABLE} USING fts5(names, caption, "
    "content='image_text', content_rowid='image_id', tokenize='unicode61 remove_diacritics 2')",
    f"INSERT INTO {KEYWORD_TABLE}({KEYWORD_TABLE}) VALUES ('rebuild')",  # rows already there
    f"CREATE TRIGGER IF NOT EXISTS image_text_ai AFTER INSERT ON image_text BEGIN INSERT INTO "
    f"{KEYWORD_TABLE}(rowid, names, caption) VALUES (new.image_id, new.names, new.caption); END",
    f"CREATE TRIGGER IF NOT EXISTS image_text_ad AFTER DELETE ON image_text BEGIN INSERT INTO "
    f"{KEYWORD_TABLE}({KEYWORD_TABLE}, rowid, names, caption) "
    "VALUES ('delete', old.image_id, old.names, old.caption); END",
    f"CREATE TRIGGER IF NOT EXISTS image_text_au AFTER UPDATE ON image_text BEGIN INSERT INTO "
    f"{KEYWORD_TABLE}({KEYWORD_TABLE}, rowid, names, caption) "
    "VALUES ('delete', old.image_id, old.names, old.caption); INSERT INTO "
    f"{KEYWORD_TABLE}(rowid, names, caption) VALUES (new.image_id, new.names, new.caption); END",
)
_RANKING = text(
    f"SELECT {KEYWORD_TABLE}.rowid FROM {KEYWORD_TABLE} JOIN images ON images.id = "  # noqa: S608
    f"{KEYWORD_TABLE}.rowid WHERE {KEYWORD_TABLE} MATCH :match AND images.status IN :statuses "
    f"ORDER BY bm25({KEYWORD_TABLE}), {KEYWORD_TABLE}.rowid"
).bindparams(bindparam("statuses", expanding=True))


def open_engine(path: Path, read_only: bool) -> Engine:
    """An engine on the catalog file at `path` (no query runs yet)."""
    if not read_only:
        engine = create_engine(
            URL.create("sqlite", database=str(path)), connect_args={"factory": PatientConnection}
        )
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
    cursor.close()  # waits for another writer's lock: `sqlite_wait`


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


def create_keyword_index(conn: Connection) -> None:
    """The FTS5 table and its triggers; skipped (keyword search then says why) where this
    SQLite was built without FTS5, so indexing and plain searches never depend on it."""
    if not conn.exec_driver_sql("SELECT sqlite_compileoption_used('ENABLE_FTS5')").scalar():
        log.warning("this SQLite has no FTS5: the catalog gets no keyword index (--text-match)")
        return
    for statement in _KEYWORD_DDL:
        conn.exec_driver_sql(statement)


def has_keyword_index(conn: Connection) -> bool:
    query = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name")
    return conn.execute(query, {"name": KEYWORD_TABLE}).first() is not None


def keyword_ranking(
    conn: Connection, words: Sequence[str], statuses: Sequence[str]
) -> Iterator[int]:
    """Ids of the images in `statuses` whose names or caption hold any of `words`, best BM25
    first. Each word is an FTS5 string ("..."), so no user text is query syntax."""
    match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
    rows = conn.execute(_RANKING, {"match": match, "statuses": list(statuses)})
    return (image_id for (image_id,) in rows)
