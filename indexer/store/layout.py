"""The catalog's names as plain data: its file, row states, image columns and migration names.

Shared by the SQLAlchemy schema (`indexer.store.schema`, which writes and migrates) and the
stdlib sqlite3 reader (`indexer.store.reader`, which answers queries): a cold query must not pay
SQLAlchemy's import, and both sides still read one definition. Nothing here imports anything
heavier than the standard library.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path

from indexer.errors import PhotoseekError

CATALOG_FILE = "catalog.sqlite"
GENERATION = "generation"  # the meta key of the change counter (`Catalog.generation`)

# A row is live (OK: it has a vector, FAISS holds it), failed (ERROR: a reason, no vector), or
# OFFLINE: it has a vector, but its folder or drive could not be reached on the last run. An
# offline row is kept (no embedding is lost to an unplugged drive), left out of FAISS and of
# searches by default, and live again once its folder is listed with the file unchanged.
OK, ERROR, OFFLINE = "ok", "error", "offline"
WITH_VECTOR = (OK, OFFLINE)

# Ordered; each runs once and is recorded in the `migrations` table. Append, never edit: the
# schema pairs each name with its step, in this order.
MIGRATION_NAMES = (
    "0001_initial",
    "0002_text_tables",
    "0003_itm_tokens",
    "0004_root_walk_options",
    "0005_offline_rows_and_error_decoder",
    "0006_captions_and_keywords",
)
SCHEMA_VERSION = len(MIGRATION_NAMES)
# Migrations a read-only open may find missing: they add what only some queries read (captions
# and the keyword index, for --text-match, which then names the upgrade), so a plain search of
# a catalog an older photoseek wrote keeps working until its next `photoseek index`.
READER_OPTIONAL = frozenset({"0006_captions_and_keywords"})

# What a read-only connection sets: it never writes, and never waits on an indexer's write lock
# (WAL readers don't; only a checkpoint might, hence the timeout).
READ_PRAGMAS = ("PRAGMA query_only=ON", "PRAGMA busy_timeout=10000")


@dataclass(frozen=True, slots=True)
class ImageRow:
    """A catalog row as the indexer and queries see it; its fields are the `images` table's
    columns, in the table's order (a test holds the schema to it)."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes | None
    width: int | None
    height: int | None
    taken_at: str | None
    camera_make: str | None
    camera_model: str | None
    status: str
    error: str | None
    indexed_at: float
    decoder: str | None


IMAGE_COLUMNS = tuple(f.name for f in fields(ImageRow))


class CatalogTooNew(PhotoseekError):
    """The catalog was written by a newer photoseek than this one."""


class CatalogNeedsUpgrade(PhotoseekError):
    """The catalog predates this photoseek and a read-only open cannot migrate it."""


def check_applied(applied: set[str], path: Path | str, read_only: bool) -> None:
    """Refuse a catalog from a newer photoseek (migrations this one does not know); for a
    read-only open, also one that is older (it cannot migrate)."""
    unknown = applied - set(MIGRATION_NAMES)
    if unknown:
        raise CatalogTooNew(
            f"{path} was written by a newer photoseek (schema {len(applied)}, this one knows "
            f"{SCHEMA_VERSION}: {', '.join(sorted(unknown))}); upgrade photoseek to open it"
        )
    if read_only and set(MIGRATION_NAMES) - READER_OPTIONAL - applied:
        raise CatalogNeedsUpgrade(
            f"{path} was written by an older photoseek (schema {len(applied)} < "
            f"{SCHEMA_VERSION}); run `photoseek index` on it once to upgrade it"
        )


def read_only_uri(path: Path) -> tuple[str, dict[str, str]]:
    """SQLite's URI filename for a read-only open of `path`, and its query parameters.

    The path is percent-encoded, so `?`, `%` and `#` in it are just bytes. On read-only media
    (the folder cannot be written and holds no WAL) `immutable=1`: no -shm can be made there,
    and no writer can be at work.
    """
    query = {"mode": "ro"}
    if not os.access(path.parent, os.W_OK) and not path.with_name(path.name + "-wal").exists():
        query["immutable"] = "1"
    return "file:" + urllib.parse.quote(os.fspath(path)), query
