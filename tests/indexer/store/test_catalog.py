"""The SQLite catalog: migrations, WAL, prefix queries, batches and vectors."""

from __future__ import annotations

import sqlite3

import numpy as np

from indexer.store.catalog import MIGRATIONS, SCHEMA_VERSION, Catalog, NewImage


def item(path: bytes, seed: int | None, error: str | None = None) -> NewImage:
    vector = None
    if seed is not None:
        v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
        vector = v / np.linalg.norm(v)
    return NewImage(path, 10, 20, bytes([seed or 0]) * 16, vector=vector, error=error)


def test_migrations_are_recorded_once_and_wal_is_on(tmp_path):
    Catalog.open(tmp_path).close()
    catalog = Catalog.open(tmp_path)  # reopening runs nothing twice
    assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
    with sqlite3.connect(tmp_path / "catalog.sqlite") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM migrations")]
        assert names == [name for name, _ in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_under_a_prefix_are_path_components(tmp_path):
    catalog = Catalog.open(tmp_path)
    paths = [b"/p/a/1.jpg", b"/p/a/sub/2.jpg", b"/p/ab/3.jpg", b"/p/a.jpg", b"/p/a\xff/4.jpg"]
    catalog.write_batch([item(p, i) for i, p in enumerate(paths)])
    under = sorted(r.path for r in catalog.rows_under([b"/p/a"]))
    assert under == [b"/p/a/1.jpg", b"/p/a/sub/2.jpg"]
    assert [r.path for r in catalog.rows_under([b"/p/a.jpg"])] == [b"/p/a.jpg"]


def test_batches_vectors_and_counts(tmp_path):
    catalog = Catalog.open(tmp_path)
    ids = catalog.write_batch([item(b"/x/1", 1), item(b"/x/2", 2), item(b"/x/bad", None, "bad")])
    assert catalog.counts() == {"images": 2, "errors": 1, "offline": 0}
    assert catalog.live_ids().tolist() == ids[:2]
    vectors = catalog.vectors(np.array(ids[:2][::-1]), 8)
    assert np.allclose(vectors[0], item(b"", 2).vector)
    new_ids = catalog.write_batch([item(b"/x/1", 3)], replaced_ids=[ids[0]])
    assert new_ids[0] > ids[-1]  # ids are never reused
    assert catalog.live_ids().tolist() == [ids[1], new_ids[0]]
    assert set(catalog.vectors_by_hash([bytes([3]) * 16])) == {bytes([3]) * 16}
    catalog.delete_ids([ids[1]])
    assert catalog.counts()["images"] == 1


def test_paths_that_are_not_utf8_round_trip(tmp_path):
    catalog = Catalog.open(tmp_path)
    path = b"/photos/caf\xe9 \n new\xff.jpg"
    catalog.write_batch([item(path, 1)])
    assert Catalog.open(tmp_path).all_rows()[0].path == path
