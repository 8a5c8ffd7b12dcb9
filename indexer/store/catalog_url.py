"""Where an index's catalog lives: its own SQLite file, or a database named by a URL.

An index directory holds the vector file and the query towers; its catalog is the SQLite file
beside them unless a URL names another (`--catalog URL`, `$PHOTOSEEK_CATALOG`). A write open
records that URL in the directory (`catalog.url`, never with a password: libpq finds those in the
URL given, `PGPASSWORD` or `~/.pgpass`), so later commands find the catalog with no option.
Standard library only: a cold query asks `sqlite_file` before deciding to import SQLAlchemy.
"""

from __future__ import annotations

import os
from pathlib import Path

CATALOG_ENV = "PHOTOSEEK_CATALOG"  # what `--catalog URL` sets for the command it precedes
URL_FILE = "catalog.url"


def given() -> str | None:
    """The catalog URL this process was given ($PHOTOSEEK_CATALOG), if any."""
    value = os.environ.get(CATALOG_ENV, "").strip()
    return value or None


def recorded(directory: Path) -> str | None:
    """The catalog URL the index directory records, if any."""
    try:
        value = (directory / URL_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def configured(directory: Path) -> str | None:
    """The catalog URL in force for `directory`: the one given, else the one it records; None
    for the default, the directory's own SQLite file."""
    return given() or recorded(directory)


def sqlite_file(directory: Path) -> bool:
    """Whether the catalog is the directory's own SQLite file (what the sqlite3 reader reads)."""
    return configured(directory) is None
