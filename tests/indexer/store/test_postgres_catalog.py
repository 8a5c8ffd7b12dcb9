"""The catalog on a real PostgreSQL server: migrations, read-only opens, recorded URLs, and
concurrent writers that neither collide nor lose a commit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pg_server import PASSWORD, PgServer
from sqlalchemy import create_engine, text

from indexer.errors import IndexNotFound
from indexer.store.catalog import Catalog, NewImage
from indexer.store.catalog_url import CATALOG_ENV, URL_FILE
from indexer.store.engines import (
    BadCatalogUrl,
    CatalogMismatch,
    CatalogUnreachable,
    IndexReadOnly,
)
from indexer.store.index_dir import IndexBusy, writer_lock
from indexer.store.layout import SCHEMA_VERSION, CatalogNeedsUpgrade, CatalogTooNew
from indexer.store.schema import MIGRATIONS


def _row(path: bytes, seed: int = 0) -> NewImage:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return NewImage(path, 1, 2, path[-16:].rjust(16, b"h"), vector=v / np.linalg.norm(v))


def _sql(url: str, statement: str) -> list[tuple]:
    """Run one statement through a plain engine (the test's own, not the catalog's)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _fingerprint(url: str) -> list[tuple]:
    """Every table's rows, as text: equal fingerprints, equal catalogs."""
    tables = ("meta", "migrations", "roots", "images", "embeddings", "text_cache", "texts")
    return [
        (
            t,
            *_sql(
                url,
                f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {t} x",
            )[0],
        )  # fmt: skip
        for t in tables
    ]


def test_a_fresh_catalog_is_migrated_and_records_its_url_without_the_password(tmp_path, pg_url):
    catalog = Catalog.open(tmp_path, url=pg_url)
    assert catalog.schema_version() == SCHEMA_VERSION
    assert PASSWORD not in catalog.where
    ids = catalog.write_batch([_row(b"/p/a.jpg"), _row(b"/p/b.jpg", 1)])
    assert ids == [1, 2] and catalog.generation() == 1
    catalog.close()
    recorded = (tmp_path / URL_FILE).read_text()
    assert recorded.startswith("postgresql+psycopg://photo@/") and PASSWORD not in recorded
    names = [name for (name,) in _sql(pg_url, "SELECT name FROM migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]
    assert not (tmp_path / "catalog.sqlite").exists()


def test_later_opens_find_the_recorded_catalog_with_the_password_from_libpq(
    tmp_path, pg_url, monkeypatch
):
    Catalog.open(tmp_path, url=pg_url).close()
    with pytest.raises(CatalogUnreachable, match="password") as failed:
        Catalog.open(tmp_path, read_only=True)  # no password anywhere: the server refuses
    assert "\n" not in str(failed.value) and PASSWORD not in str(failed.value)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    reader = Catalog.open(tmp_path, read_only=True)
    assert reader.counts()["images"] == 0 and reader.schema_version() == SCHEMA_VERSION
    reader.close()
    monkeypatch.setenv(CATALOG_ENV, pg_url)  # the same catalog given again: fine
    Catalog.open(tmp_path).close()


def test_a_directory_refuses_another_catalog_than_its_own(tmp_path, pg_server: PgServer, pg_url):
    Catalog.open(tmp_path / "pg", url=pg_url).close()
    other = pg_server.url(pg_server.new_database())
    for read_only in (False, True):
        with pytest.raises(CatalogMismatch, match="belongs to the catalog"):
            Catalog.open(tmp_path / "pg", url=other, read_only=read_only)
    (tmp_path / "lite").mkdir()
    Catalog.open(tmp_path / "lite").close()  # the default: its own SQLite file
    with pytest.raises(CatalogMismatch, match="its own SQLite catalog"):
        Catalog.open(tmp_path / "lite", url=pg_url)


def test_bad_urls_and_unreachable_servers_are_one_line_errors(tmp_path, pg_server: PgServer):
    with pytest.raises(BadCatalogUrl, match="not a database URL"):
        Catalog.open(tmp_path, url="just words")
    with pytest.raises(BadCatalogUrl, match="not mysql"):
        Catalog.open(tmp_path, url="mysql://u:pw@host/db")
    gone = f"postgresql+psycopg://photo:{PASSWORD}@/db?host={tmp_path}/no-such-socket-dir"
    for read_only in (False, True):
        with pytest.raises(CatalogUnreachable) as failed:
            Catalog.open(tmp_path / "x", url=gone, read_only=read_only)
        message = str(failed.value)
        assert "\n" not in message and PASSWORD not in message and "cannot open" in message
    assert not (tmp_path / "x" / URL_FILE).exists()  # nothing recorded for a failed open


def test_an_empty_database_is_no_index(tmp_path, pg_url):
    with pytest.raises(IndexNotFound, match="no photoseek catalog"):
        Catalog.open(tmp_path, url=pg_url, read_only=True)
    assert _sql(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_read_only_open_runs_read_only_transactions_and_never_writes(tmp_path, pg_url):
    writer = Catalog.open(tmp_path, url=pg_url)
    writer.write_batch([_row(b"/p/a.jpg")])
    writer.close()
    before = _fingerprint(pg_url)
    reader = Catalog.open(tmp_path, url=pg_url, read_only=True)
    assert reader.counts()["images"] == 1 and len(reader.vectors(reader.live_ids(), 8)) == 1
    with reader.engine.connect() as conn:
        assert conn.scalar(text("SHOW transaction_read_only")) == "on"
        with pytest.raises(Exception, match="read-only transaction"):
            conn.execute(text("DELETE FROM images"))
    with pytest.raises(IndexReadOnly):
        reader.write_batch([_row(b"/p/b.jpg")])
    reader.close()
    assert _fingerprint(pg_url) == before


def test_migrations_upgrade_an_older_catalog_and_refuse_a_newer_one(tmp_path, pg_url):
    Catalog.open(tmp_path, url=pg_url).close()
    _sql(pg_url, "DELETE FROM migrations WHERE name >= '0004'")
    _sql(pg_url, "ALTER TABLE images DROP COLUMN decoder")
    _sql(pg_url, "ALTER TABLE roots DROP COLUMN options")
    with pytest.raises(CatalogNeedsUpgrade, match="photoseek index"):
        Catalog.open(tmp_path, url=pg_url, read_only=True)
    catalog = Catalog.open(tmp_path, url=pg_url)  # a write open upgrades it
    catalog.write_batch([NewImage(b"/p/bad.jpg", 1, 2, None, error="bad", decoder="v1")])
    assert catalog.all_rows()[0].decoder == "v1" and catalog.schema_version() == SCHEMA_VERSION
    catalog.close()
    _sql(pg_url, "INSERT INTO migrations VALUES ('9999_from_the_future', 0)")
    for read_only in (False, True):
        with pytest.raises(CatalogTooNew, match="newer photoseek"):
            Catalog.open(tmp_path, url=pg_url, read_only=read_only)


def test_openers_racing_on_a_fresh_catalog_migrate_it_once(tmp_path, pg_url):
    failures: list[BaseException] = []

    def open_it(n: int) -> None:
        try:
            Catalog.open(tmp_path / str(n), url=pg_url).close()
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=open_it, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    rows = _sql(pg_url, "SELECT name, count(*) FROM migrations GROUP BY name ORDER BY name")
    assert rows == [(name, 1) for name, _ in MIGRATIONS]


def test_concurrent_writers_lose_no_commit_and_share_no_id(tmp_path, pg_url):
    Catalog.open(tmp_path, url=pg_url).close()
    writers, batches, per_batch = 4, 15, 3
    failures: list[BaseException] = []
    ids: list[int] = []

    def write(n: int) -> None:
        catalog = Catalog.open(tmp_path, url=pg_url)
        try:
            for b in range(batches):
                rows = [
                    _row(f"/root{n}/{b}-{i}.jpg".encode(), b * 10 + i) for i in range(per_batch)
                ]
                ids.extend(catalog.write_batch(rows))
                catalog.set_meta("embedder", f"writer {n}")  # one key, many writers
                catalog.cache_text_vectors({b"same key": np.ones(4, np.float32) * n})
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)
        finally:
            catalog.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    total = writers * batches * per_batch
    catalog = Catalog.open(tmp_path, url=pg_url, read_only=True)
    assert catalog.counts()["images"] == total == len(set(ids))
    assert catalog.generation() == writers * batches  # one bump per commit, none lost
    assert sorted(catalog.live_ids().tolist()) == sorted(ids)
    catalog.close()


def test_a_busy_index_folder_on_a_shared_catalog_says_what_to_do(tmp_path, pg_url):
    Catalog.open(tmp_path, url=pg_url).close()
    with writer_lock(tmp_path), pytest.raises(IndexBusy, match="each need their own --index"):
        with writer_lock(tmp_path):
            pass
