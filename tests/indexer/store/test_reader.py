"""The sqlite3 reader: the same answers as a read-only `Catalog`, the same refusals, no writes."""

from __future__ import annotations

import sqlite3
from dataclasses import fields

import numpy as np
import pytest

from indexer.store import schema
from indexer.store.catalog import (
    CATALOG_FILE,
    Catalog,
    CatalogNeedsUpgrade,
    CatalogTooNew,
    NewImage,
)
from indexer.store.layout import IMAGE_COLUMNS, MIGRATION_NAMES, ImageRow
from indexer.store.reader import CHUNK, CatalogReader


def new(i: int, error: str | None = None) -> NewImage:
    rng = np.random.default_rng(i)
    vector = None if error else rng.standard_normal(8).astype(np.float32)
    tokens = None if error or i % 3 else rng.standard_normal(12).astype(np.float16)
    return NewImage(f"/p/{i:04d}\xe9.jpg".encode() + b"\xff", 10 + i, 20 + i, bytes([i % 256]) * 16,
                    vector=vector, width=i, height=2 * i, taken_at=f"2020-01-{1 + i % 28:02d}",
                    camera_make="Make", error=error, tokens=tokens)  # fmt: skip


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog.open(tmp_path)
    ids = catalog.write_batch([new(i, "bad" if i % 7 == 0 else None) for i in range(1, CHUNK + 40)])
    catalog.set_offline(ids[:5], offline=True)
    catalog.set_meta("model", '{"spec": "x"}')
    catalog.close()
    return tmp_path


def test_the_schema_and_the_reader_share_one_description():
    assert tuple(schema.images.c.keys()) == IMAGE_COLUMNS == tuple(f.name for f in fields(ImageRow))
    assert [name for name, _ in schema.MIGRATIONS] == list(MIGRATION_NAMES)


def test_it_reads_what_a_read_only_catalog_reads(catalog):
    full, reader = Catalog.open(catalog, read_only=True), CatalogReader.open(catalog)
    try:
        assert reader.get_meta("model") == full.get_meta("model")
        assert reader.get_meta("absent") is None
        assert reader.generation() == full.generation() > 0
        assert reader.counts() == full.counts()
        for method in ("live_ids", "offline_ids"):
            assert np.array_equal(getattr(reader, method)(), getattr(full, method)())
            assert getattr(reader, method)().dtype == np.int64
        everything = [r.id for r in full.all_rows()] + [10**6]  # more than one chunk, one absent
        assert reader.rows_by_id(iter(everything)) == full.rows_by_id(everything)
        live = full.live_ids()[::-1]
        assert np.array_equal(reader.vectors(live, 8), full.vectors(live, 8))
        tokens, expected = reader.tokens_by_id(everything), full.tokens_by_id(everything)
        assert tokens.keys() == expected.keys() and tokens
        assert all(np.array_equal(tokens[i], expected[i]) for i in tokens)
    finally:
        full.close()
        reader.close()


def test_it_refuses_other_schemas_as_the_catalog_does(catalog):
    with sqlite3.connect(catalog / CATALOG_FILE) as conn:
        conn.execute("DELETE FROM migrations WHERE name >= '0004'")
    with pytest.raises(CatalogNeedsUpgrade, match="photoseek index"):
        CatalogReader.open(catalog)
    with sqlite3.connect(catalog / CATALOG_FILE) as conn:
        conn.execute("INSERT INTO migrations VALUES ('9999_from_the_future', 0)")
    with pytest.raises(CatalogTooNew, match="newer photoseek"):
        CatalogReader.open(catalog)


def test_it_never_writes(catalog):
    reader = CatalogReader.open(catalog)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly|query_only"):
            reader._conn.execute("DELETE FROM meta")
    finally:
        reader.close()
    with sqlite3.connect(catalog / CATALOG_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM meta WHERE key = 'model'").fetchone() == (1,)
