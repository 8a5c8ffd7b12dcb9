"""The catalog's schema: its tables, the states of a row, and the ordered, named migrations."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    inspect,
)

from indexer.store import postgres, sqlite

# Plain names shared with the sqlite3 reader; re-exported here for the write side.
from indexer.store.layout import (
    CATALOG_FILE,
    ERROR,
    MIGRATION_NAMES,
    OFFLINE,
    OK,
    SCHEMA_VERSION,
    WITH_VECTOR,
)

__all__ = ["CATALOG_FILE", "ERROR", "MIGRATION_NAMES", "OFFLINE", "OK", "SCHEMA_VERSION",
           "WITH_VECTOR"]  # fmt: skip

metadata = MetaData()

meta = Table("meta", metadata, Column("key", String, primary_key=True), Column("value", Text))
migrations = Table(
    "migrations",
    metadata,
    Column("name", String, primary_key=True),
    Column("applied_at", Float, nullable=False),
)
roots = Table(
    "roots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, unique=True, nullable=False),
    Column("added_at", Float, nullable=False),
    Column("options", Text),  # its walk options (WalkOptions.to_json); NULL: the defaults
)
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, unique=True, nullable=False),  # raw bytes: any file name works
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", LargeBinary, index=True),
    Column("width", Integer),
    Column("height", Integer),
    Column("taken_at", String),
    Column("camera_make", String),
    Column("camera_model", String),
    Column("status", String, nullable=False),  # OK | ERROR | OFFLINE
    Column("error", Text),
    Column("indexed_at", Float, nullable=False),
    Column("decoder", String),  # with an error: the decoder version that failed (retried on change)
    sqlite_autoincrement=True,
)
embeddings = Table(
    "embeddings",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float32, L2-normalised
)

# The ITM head's compact per-image tokens (fp16), for reranking; only with a head-bearing model.
itm_tokens = Table(
    "itm_tokens",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tokens", LargeBinary, nullable=False),
)
# Text embeddings cached per model (describe's vocabularies and --texts files).
text_cache = Table(
    "text_cache",
    metadata,
    Column("key", LargeBinary, primary_key=True),  # blake2b(model weights id, text)
    Column("vector", LargeBinary, nullable=False),
)
# A caption corpus (`photoseek texts add`), searched through its own FAISS index.
texts = Table(
    "texts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("text", Text, unique=True, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)

# What keyword search reads for each image: its file and folder names as words, and the caption
# a captioner wrote (or why it could not). The keyword index over it is the dialect's own (FTS5
# kept in step by triggers, or a tsvector column): `create_keyword_index` in sqlite.py/postgres.py.
image_text = Table(
    "image_text",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("names", Text, nullable=False),
    Column("caption", Text),
    Column("captioner", String),  # the fingerprint of what wrote caption (or failed to)
    Column("captioned_at", Float),
    Column("caption_error", Text),
)

# Row states (OK, ERROR, OFFLINE) and what each means: `indexer.store.layout`.


def path_under(prefix: bytes) -> ColumnElement[bool]:
    """The clause for "the image's path is `prefix` (a file) or lies below it (a folder)".

    A range on the bytes, not LIKE: the unique index on path serves it, and no byte of a name
    acts as a wildcard. Everything below `folder/` sorts before `folder0`, "0" being "/" + 1.
    """
    folder = prefix.rstrip(b"/")
    below = (images.c.path >= folder + b"/") & (images.c.path < folder + b"0")
    return (images.c.path == prefix) | below


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[meta, roots, images, embeddings])


def _text_tables(conn: Connection) -> None:
    metadata.create_all(conn, tables=[text_cache, texts])


def _itm_tokens(conn: Connection) -> None:
    metadata.create_all(conn, tables=[itm_tokens])


def _add_column(conn: Connection, table: Table, name: str) -> None:
    # 0001 creates tables from today's definitions, so a new catalog has the column already.
    # Names and types come from the schema above, never from input.
    if name not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
        kind = table.c[name].type.compile(conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")


def _root_walk_options(conn: Connection) -> None:
    _add_column(conn, roots, "options")


def _offline_rows_and_error_decoder(conn: Connection) -> None:
    # Rows may now be OFFLINE: an older photoseek would count them nowhere and delete them.
    _add_column(conn, images, "decoder")


def _captions_and_keywords(conn: Connection) -> None:
    metadata.create_all(conn, tables=[image_text])
    dialects = {"sqlite": sqlite, "postgresql": postgres}
    dialects[conn.dialect.name].create_keyword_index(conn)


# Each step beside its name in `layout.MIGRATION_NAMES` (the order, which readers check too);
# each runs once and is recorded in `migrations`. Append, never edit.
_STEPS: list[Callable[[Connection], None]] = [
    _create_v1,  # 0001_initial
    _text_tables,  # 0002_text_tables
    _itm_tokens,  # 0003_itm_tokens
    _root_walk_options,  # 0004_root_walk_options
    _offline_rows_and_error_decoder,  # 0005_offline_rows_and_error_decoder
    _captions_and_keywords,  # 0006_captions_and_keywords
]
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = list(
    zip(MIGRATION_NAMES, _STEPS, strict=True)
)
