"""The keyword index: names as words, FTS5 kept in step by triggers, safe queries, migration
from the previous schema, and the same behaviour on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from indexer.store import keywords, postgres
from indexer.store.catalog import Catalog, NewImage
from indexer.store.engines import locate, open_engine, upsert
from indexer.store.keywords import CaptionResult, KeywordSearchUnavailable
from indexer.store.layout import CATALOG_FILE, OFFLINE, OK
from indexer.store.reader import CatalogReader
from indexer.store.schema import MIGRATIONS, embeddings, images, meta, migrations


def _add(catalog: Catalog, *paths: bytes) -> list[int]:
    vector = np.ones(4, np.float32) / 2
    return catalog.write_batch([NewImage(p, 1, 1, p, vector) for p in paths])


def _ranking(catalog: Catalog, text: str, statuses=(OK,), limit=10) -> list[int]:
    dialect = catalog.target.dialect
    return keywords.keyword_ranking(catalog.engine, dialect, text, statuses, limit)


def test_words_and_names():
    assert keywords.words('Café_au-lait.JPG "NEAR" *x* -y') == ["cafe", "au", "lait", "jpg",
                                                                "near", "x", "y"]  # fmt: skip
    roots = [b"/home/u/Photos", b"/home/u/Photos/Paris"]
    assert keywords.names_of(b"/home/u/Photos/Paris/day 1/IMG_0042.jpg", roots) == (
        "paris day 1 img 0042 jpg"  # the deepest root's own name, not the folders above it
    )
    assert keywords.names_of(b"/elsewhere/trip/x.png", roots) == "trip x png"
    assert keywords.names_of(b"/home/u/Photos/\xff bad.jpg", roots) == "photos bad jpg"


def test_names_are_found_and_follow_deletes(tmp_path):
    catalog = Catalog.open(tmp_path)
    catalog.add_roots([b"/p"])
    beach, cat, other = _add(catalog, b"/p/beach trip/sunset.jpg", b"/p/pets/cat_sofa.png",
                             b"/p/misc/IMG_1.jpg")  # fmt: skip
    assert keywords.fill_names(catalog.engine, catalog.root_paths()) == 3
    assert keywords.fill_names(catalog.engine, catalog.root_paths()) == 0  # each row once
    assert _ranking(catalog, "beach") == [beach]
    assert _ranking(catalog, "sofa cat") == [cat]
    assert set(_ranking(catalog, "jpg")) == {beach, other}
    assert _ranking(catalog, "mountain") == [] and _ranking(catalog, "---") == []
    catalog.delete_ids([beach])  # the cascade's trigger takes it out of the FTS5 index too
    assert _ranking(catalog, "beach") == []
    catalog.set_offline([cat], offline=True)
    assert _ranking(catalog, "cat") == [] and _ranking(catalog, "cat", (OK, OFFLINE)) == [cat]
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        conn.execute(
            "INSERT INTO image_text_fts(image_text_fts, rank) VALUES ('integrity-check', 1)"
        )
    catalog.close()


@pytest.mark.parametrize(
    "query", ['"', 'say "cheese', "*", "NEAR", "NEAR(a b)", "-cat", "a AND", "OR", "^x", "col:x",
              "(", "'", "😀", ""],
)  # fmt: skip
def test_user_text_is_never_query_syntax(tmp_path, query):
    catalog = Catalog.open(tmp_path)
    catalog.add_roots([b"/p"])
    (near,) = _add(catalog, b"/p/NEAR the cat.jpg")
    keywords.fill_names(catalog.engine, catalog.root_paths())
    found = _ranking(catalog, query)  # no syntax error, whatever the text
    assert found == ([near] if set(keywords.words(query)) & {"near", "the", "cat"} else [])
    catalog.close()


def test_captions_are_searchable_and_ranked_by_bm25(tmp_path):
    catalog = Catalog.open(tmp_path)
    catalog.add_roots([b"/p"])
    a, b = _add(catalog, b"/p/a.jpg", b"/p/b.jpg")
    keywords.fill_names(catalog.engine, catalog.root_paths())
    keywords.store_captions(catalog.engine, "fp1", [
        CaptionResult(a, "a red lighthouse by the sea"),
        CaptionResult(b, "lighthouse lighthouse lighthouse"),
    ])  # fmt: skip
    assert _ranking(catalog, "lighthouse") == [b, a]  # more of the word, shorter text
    assert _ranking(catalog, "red sea") == [a]
    captions = {a: "a red lighthouse by the sea", b: "lighthouse lighthouse lighthouse"}
    assert catalog.captions_by_id([a, b, 999]) == captions
    assert keywords.due_for_captions(catalog.engine, "fp1") == []
    assert [i for i, _ in keywords.due_for_captions(catalog.engine, "fp2")] == [a, b]
    keywords.store_captions(catalog.engine, "fp2", [CaptionResult(a, error="truncated file")])
    assert _ranking(catalog, "red") == []  # the new captioner's failure replaced the caption
    with sqlite3.connect(tmp_path / CATALOG_FILE) as conn:
        query = "SELECT image_id, captioner, caption_error FROM image_text WHERE caption IS NULL"
        assert conn.execute(query).fetchall() == [(a, "fp2", "truncated file")]
    catalog.close()


def _previous_schema(directory: Path) -> int:
    """A catalog as the photoseek before captions made it (only the migrations it knew), with
    one image; returns the image's id."""
    engine = open_engine(locate(directory), read_only=False)
    with engine.begin() as conn:
        migrations.create(conn)
        for number, (name, step) in enumerate(MIGRATIONS[:-1], 1):
            step(conn)
            conn.execute(insert(migrations).values(name=name, applied_at=0.0))
            upsert(conn, meta, key="schema_version", value=str(number))
        values = {"path": b"/p/old beach.jpg", "size": 1, "mtime_ns": 1, "status": OK,
                  "indexed_at": 0.0}  # fmt: skip
        image_id = conn.execute(insert(images).values(values).returning(images.c.id)).scalar_one()
        conn.execute(insert(embeddings).values(image_id=image_id, vector=b"\0" * 16))
    engine.dispose()
    return image_id


def test_an_older_catalog_reads_plainly_and_upgrades_on_the_next_write_open(tmp_path):
    assert MIGRATIONS[-1][0] == "0006_captions_and_keywords"
    row = _previous_schema(tmp_path)
    reader = Catalog.open(tmp_path, read_only=True)  # plain reads keep working, read-only
    assert reader.rows_by_id([row])[row].path == b"/p/old beach.jpg"
    assert reader.captions_by_id([row]) == {} and reader.schema_version() == 5
    with pytest.raises(KeywordSearchUnavailable, match="photoseek index"):
        _ranking(reader, "beach")
    reader.close()
    cold = CatalogReader.open(tmp_path)  # the torch-free, SQLAlchemy-free reader too
    assert cold.captions_by_id([row]) == {} and cold.live_ids().tolist() == [row]
    cold.close()
    upgraded = Catalog.open(tmp_path)  # what the next `photoseek index` does
    assert upgraded.schema_version() == len(MIGRATIONS)
    upgraded.add_roots([b"/p"])
    assert keywords.fill_names(upgraded.engine, upgraded.root_paths()) == 1
    assert _ranking(upgraded, "beach") == [row]
    upgraded.close()


def test_a_catalog_without_fts5_fails_text_match_in_one_line(tmp_path):
    catalog = Catalog.open(tmp_path)
    with catalog.engine.begin() as conn:  # as the migration leaves it under a SQLite sans FTS5
        for name in ("image_text_ai", "image_text_ad", "image_text_au"):
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
        conn.exec_driver_sql("DROP TABLE image_text_fts")
    (row,) = _add(catalog, b"/p/x.jpg")
    keywords.fill_names(catalog.engine, [b"/p"])  # names are still kept, ready for later
    with pytest.raises(KeywordSearchUnavailable, match="without FTS5"):
        _ranking(catalog, "x")
    catalog.close()


def test_postgres_keyword_index(tmp_path, pg_url):
    catalog = Catalog.open(tmp_path, url=pg_url)
    assert catalog.target.dialect is postgres
    catalog.add_roots([b"/p"])
    beach, cat = _add(catalog, b"/p/beach trip/sunset.jpg", b"/p/pets/cat_sofa.png")
    keywords.fill_names(catalog.engine, catalog.root_paths())
    keywords.store_captions(catalog.engine, "fp", [CaptionResult(cat, "a cat on a red sofa")])
    assert _ranking(catalog, "beach") == [beach]
    assert _ranking(catalog, "red") == [cat] and catalog.captions_by_id([cat, beach]) == {
        cat: "a cat on a red sofa"}  # fmt: skip
    assert set(_ranking(catalog, "red sunset")) == {beach, cat}  # any of the words
    for query in ('"', "*", "NEAR", "-cat", "a & b | !c", "':*", "(", ""):
        assert _ranking(catalog, query) in ([], [cat])  # never a syntax error
    catalog.set_offline([cat], offline=True)
    assert _ranking(catalog, "cat") == [] and _ranking(catalog, "cat", (OK, OFFLINE)) == [cat]
    catalog.delete_ids([beach])
    assert _ranking(catalog, "beach") == []
    catalog.close()
