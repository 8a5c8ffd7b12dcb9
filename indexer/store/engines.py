"""The catalog's database, chosen by URL: SQLite (the default) or PostgreSQL.

`locate` says which database an index directory's catalog is (`indexer.store.catalog_url`), and
`open_engine` opens it through its dialect module (`indexer.store.sqlite`,
`indexer.store.postgres`), which holds everything that is not plain SQLAlchemy. Migrations,
the generation counter and keyed writes are the same SQL on both; what differs (the lock a
migration takes, the upsert construct, the checkpoint) comes from the dialect module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, Integer, String, Table, cast, insert, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from indexer import atomic
from indexer.errors import IndexNotFound, PhotoseekError
from indexer.store import catalog_url, postgres, sqlite
from indexer.store.layout import CATALOG_FILE, GENERATION, check_applied
from indexer.store.schema import MIGRATIONS, meta, migrations

_DIALECTS: dict[str, ModuleType] = {"sqlite": sqlite, "postgresql": postgres}


class IndexReadOnly(PhotoseekError):
    """A write was asked of a catalog opened read-only, or on read-only media."""


class BadCatalogUrl(PhotoseekError):
    """A catalog URL that cannot be parsed, names an unsupported database, or lacks its driver."""


class CatalogMismatch(PhotoseekError):
    """The index directory's vectors belong to another catalog than the one given."""


class CatalogUnreachable(PhotoseekError):
    """The catalog's database server refused or could not be reached."""


@dataclass(frozen=True)
class CatalogTarget:
    """The database of one index's catalog: its URL (with any password it was given) and, for
    SQLite, its file."""

    url: URL
    file: Path | None = None
    from_url: bool = False  # named by a URL (given or recorded), not the directory's own file

    @property
    def where(self) -> str:
        """How messages name it: the file, or the URL without its password."""
        return str(self.file) if self.file is not None else public_url(self.url)

    @property
    def dialect(self) -> ModuleType:
        return _DIALECTS[self.url.get_backend_name()]


def public_url(url: URL) -> str:
    """`url` as it may be recorded or shown: no password, in its place or in the query."""
    query = {k: v for k, v in url.query.items() if k != "password"}
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
    return bare.render_as_string(hide_password=False)


def locate(directory: Path, url: str | None = None) -> CatalogTarget:
    """The catalog of the index in `directory`: `url`, else $PHOTOSEEK_CATALOG, else the URL the
    directory records, else its own SQLite file. A URL other than the one the directory's
    vectors were built from is refused (CatalogMismatch)."""
    text = url or catalog_url.configured(directory)
    own_file = directory / CATALOG_FILE
    if text is None:
        return CatalogTarget(URL.create("sqlite", database=str(own_file)), own_file)
    parsed = _parse(text)
    file = None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise BadCatalogUrl(f"a SQLite catalog URL must name a file: {public_url(parsed)}")
        file = Path(parsed.database).expanduser()
    _check_bound(directory, parsed, file)
    return CatalogTarget(parsed, file, from_url=True)


def _parse(text: str) -> URL:
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise BadCatalogUrl(f"not a database URL: {text.split('@')[-1]!r} (e.g. "
                            "postgresql+psycopg://user@host/db or sqlite:////path/catalog.sqlite)"
                            ) from None  # fmt: skip
    if parsed.get_backend_name() not in _DIALECTS:
        raise BadCatalogUrl(f"catalogs live in SQLite or PostgreSQL, not "
                            f"{parsed.get_backend_name()}: {public_url(parsed)}")  # fmt: skip
    return parsed


def _check_bound(directory: Path, url: URL, file: Path | None) -> None:
    recorded = catalog_url.recorded(directory)
    if recorded is not None and public_url(make_url(recorded)) != public_url(url):
        raise CatalogMismatch(
            f"the index in {directory} belongs to the catalog {recorded}, not {public_url(url)}; "
            f"use that catalog, or another --index (its vectors are that catalog's)"
        )
    own = directory / CATALOG_FILE
    if recorded is None and own.exists() and (file is None or file.resolve() != own.resolve()):
        raise CatalogMismatch(
            f"the index in {directory} has its own SQLite catalog; use another --index for "
            f"the catalog {public_url(url)}"
        )


def record(directory: Path, target: CatalogTarget) -> None:
    """Record a URL-named catalog in the directory (without its password) for later commands."""
    if not target.from_url or catalog_url.recorded(directory) is not None:
        return  # the default file needs no record; a recorded URL is this one (`locate`)
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_text(directory / catalog_url.URL_FILE, public_url(target.url) + "\n")


def open_engine(target: CatalogTarget, read_only: bool) -> Engine:
    """An engine on the catalog's database through its dialect module (no query runs yet)."""
    if target.file is not None:
        return sqlite.open_engine(target.file, read_only)
    try:
        return postgres.open_engine(target.url, read_only)
    except (NoSuchModuleError, ImportError) as e:
        raise BadCatalogUrl(f"no driver for {public_url(target.url)} ({e}); for "
                            "postgresql+psycopg install photoseek[postgres]") from None  # fmt: skip


def unreachable(target: CatalogTarget, error: DBAPIError) -> CatalogUnreachable:
    """A failed first connection, as one line that names the catalog (never its password)."""
    lines = [line.strip() for line in str(error.orig).splitlines() if line.strip()]
    return CatalogUnreachable(f"cannot open the catalog {target.where}: "
                              f"{lines[0] if lines else type(error.orig).__name__}")  # fmt: skip


def applied_migrations(conn: Connection) -> set[str]:
    has_table = inspect(conn).has_table(migrations.name)
    return set(conn.scalars(select(migrations.c.name))) if has_table else set()


def check_schema(conn: Connection, target: CatalogTarget, read_only: bool) -> None:
    """Refuse a catalog from a newer photoseek; for a read-only open, also one that is older,
    and a database without a catalog (the directory's own file is checked before it opens)."""
    applied = applied_migrations(conn)
    if read_only and not applied and target.file is None:
        raise IndexNotFound(f"no photoseek catalog in {target.where} (build one with "
                            "`photoseek index`)")  # fmt: skip
    check_applied(applied, target.where, read_only)


def migrate(engine: Engine, target: CatalogTarget) -> None:
    """Run the missing migrations, each in one transaction with its record, under the dialect's
    migration lock (another opener waits, then finds the step done)."""
    lock = target.dialect.migration_lock
    with engine.connect().execution_options(sqlite_immediate=True) as conn:
        with conn.begin():
            lock(conn)
            migrations.create(conn, checkfirst=True)
            check_schema(conn, target, read_only=False)
        for number, (name, step) in enumerate(MIGRATIONS, 1):
            with conn.begin():
                lock(conn)
                if name in applied_migrations(conn):  # re-read: another opener may have run it
                    continue
                step(conn)
                conn.execute(insert(migrations).values(name=name, applied_at=time.time()))
                upsert(conn, meta, key="schema_version", value=str(number))


def upsert(conn: Connection, table: Table, **values: Any) -> None:
    """Insert a row, or update the one with its primary key: one statement, so concurrent
    writers of one key neither collide on the key nor lose a write."""
    keys = [c.name for c in table.primary_key.columns]
    statement = _dialect_of(conn).insert(table).values(**values)
    changed = {k: v for k, v in values.items() if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))


def bump_generation(conn: Connection) -> None:
    """Add one to the generation counter in place: concurrent writers queue on its row lock
    (held to their commit), so each commit gets the next value and none is lost."""
    statement = _dialect_of(conn).insert(meta).values(key=GENERATION, value="1")
    next_value = cast(cast(meta.c.value, Integer) + 1, String)
    conn.execute(
        statement.on_conflict_do_update(index_elements=["key"], set_={"value": next_value})
    )


def _dialect_of(conn: Connection) -> ModuleType:
    return _DIALECTS[conn.dialect.name]
