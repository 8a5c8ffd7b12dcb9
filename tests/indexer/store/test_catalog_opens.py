"""Opening the catalog: exact paths, read-only opens that never write, schema versions."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest
from sqlalchemy import text

from indexer.store.catalog import (
    CATALOG_FILE,
    SCHEMA_VERSION,
    Catalog,
    CatalogNeedsUpgrade,
    CatalogTooNew,
    IndexReadOnly,
    NewImage,
)


def _row(path: bytes) -> NewImage:
    v = np.ones(8, np.float32) / np.sqrt(8)
    return NewImage(path, 1, 2, b"h" * 16, vector=v)


def test_an_index_path_with_question_mark_and_percent(tmp_path):
    directory = tmp_path / "q?dir" / "50%25 idx"
    directory.mkdir(parents=True)
    Catalog.open(directory).close()
    assert (directory / CATALOG_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q?dir"]
    catalog = Catalog.open(directory, read_only=True)
    assert catalog.counts()["images"] == 0
    catalog.close()


def test_a_read_only_open_never_writes(tmp_path):
    writer = Catalog.open(tmp_path)
    writer.write_batch([_row(b"/p/a.jpg")])
    writer.checkpoint()
    writer.close()
    before = (tmp_path / CATALOG_FILE).read_bytes()
    reader = Catalog.open(tmp_path, read_only=True)
    assert reader.counts()["images"] == 1 and reader.schema_version() == SCHEMA_VERSION
    with pytest.raises(IndexReadOnly):
        reader.write_batch([_row(b"/p/b.jpg")])
    reader.close()
    assert (tmp_path / CATALOG_FILE).read_bytes() == before


def test_a_read_only_open_does_not_wait_for_a_writer(tmp_path):
    Catalog.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / CATALOG_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO meta VALUES ('busy', 'yes')")
    try:
        started = time.monotonic()
        reader = Catalog.open(tmp_path, read_only=True)
        assert reader.counts()["images"] == 0
        reader.close()
        assert time.monotonic() - started < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    Catalog.open(tmp_path).close()
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        conn.execute("INSERT INTO migrations VALUES ('9999_from_the_future', 0)")
        conn.execute("UPDATE meta SET value = '9999' WHERE key = 'schema_version'")
    for read_only in (False, True):
        with pytest.raises(CatalogTooNew, match="newer photoseek"):
            Catalog.open(tmp_path, read_only=read_only)
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("9999",)


def test_an_older_catalog_is_read_only_after_an_upgrade(tmp_path):
    Catalog.open(tmp_path).close()
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        conn.execute("DELETE FROM migrations WHERE name >= '0004'")
    with pytest.raises(CatalogNeedsUpgrade, match="photoseek index"):
        Catalog.open(tmp_path, read_only=True)
    Catalog.open(tmp_path).close()  # a write open upgrades it
    assert Catalog.open(tmp_path, read_only=True).schema_version() == SCHEMA_VERSION


def test_ddl_is_transactional_so_a_migration_is_atomic_with_its_record(tmp_path):
    catalog = Catalog.open(tmp_path)
    with pytest.raises(RuntimeError), catalog.engine.begin() as conn:
        conn.execute(text("CREATE TABLE half_done (x INTEGER)"))
        raise RuntimeError("killed between the step and its record")
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables


def test_text_caches_still_write_through_a_read_only_catalog(tmp_path):
    Catalog.open(tmp_path).close()
    reader = Catalog.open(tmp_path, read_only=True)
    vector = np.ones(4, np.float32)
    reader.cache_text_vectors({b"k": vector})
    assert reader.add_texts([("a caption", vector)]) == 1
    assert list(reader.cached_text_vectors([b"k"])) == [b"k"]
    reader.close()
