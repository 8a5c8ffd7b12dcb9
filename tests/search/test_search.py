"""Queries on constructed vectors: arithmetic, filters before the cut, thresholds, brute force."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.errors import BadInput
from indexer.models.loading import ModelIdentity
from indexer.store import vector_store
from indexer.store.catalog import Catalog, NewImage
from indexer.store.index_dir import ModelRecord
from indexer.store.vector_store import VECTORS_FILE, VectorStore, sync
from search.engine import Engine, brute_force_knn
from search.filters import Filters, parse_date
from search.query import Term, combine, parse_terms

DIM = 16


def basis(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def synthetic_engine(directory: Path, rows: list[NewImage], exact: bool = False) -> Engine:
    """A real catalog + FAISS index holding constructed vectors (no model needed)."""
    directory.mkdir(exist_ok=True)
    catalog = Catalog.open(directory)
    catalog.write_batch(rows)
    record = ModelRecord(ModelIdentity("synthetic", "synthetic", "none"), DIM, 64)
    catalog.set_meta("model", record.to_json())
    store, _ = sync(VectorStore.empty(DIM), catalog)
    store.save(directory)
    engine = Engine.open(directory)
    if exact:
        engine.knn = brute_force_knn(catalog, DIM)
    return engine


def row(name: str, vector: np.ndarray, **meta) -> NewImage:
    path = name.encode() if isinstance(name, str) else name
    return NewImage(path, 1, meta.pop("mtime_ns", 1), path[-16:].rjust(16, b"_"),
                    vector=unit(vector), **meta)  # fmt: skip


def test_parse_terms_grammar(tmp_path):
    picture = tmp_path / "q.jpg"
    picture.write_bytes(b"x")
    terms = parse_terms(["dog", "on", "a", "beach", "+", "2:sunset", "-", "people", str(picture)])
    assert terms[0] == Term(text="dog on a beach", weight=1.0)
    assert terms[1] == Term(text="sunset", weight=2.0)
    assert terms[2].text == f"people {picture}" and terms[2].weight == -1.0
    image_term = parse_terms(["-", "noise", "+", str(picture)])[1]
    assert image_term == Term(image=os.fsencode(picture), weight=1.0)
    assert parse_terms([], [str(picture)])[0].image == os.fsencode(picture)
    for bad in ([], ["-", "only negative"], ["+"]):
        with pytest.raises(BadInput):
            parse_terms(bad)
    with pytest.raises(BadInput, match="not found"):
        parse_terms([], [str(tmp_path / "missing.jpg")])


def test_arithmetic_moves_the_ranking(tmp_path):
    vocab = {"beach": basis(0), "sunset": basis(1), "people": basis(2)}
    engine = synthetic_engine(tmp_path, [
        row("/p/beach_people.jpg", basis(0) + basis(2)),
        row("/p/beach_sunset.jpg", basis(0) + basis(1)),
        row("/p/beach.jpg", basis(0) + 0.3 * basis(3)),
        row("/p/sunset_people.jpg", basis(1) + basis(2)),
    ])  # fmt: skip

    def encode_texts(texts: list[str]) -> np.ndarray:
        return np.stack([vocab[t] for t in texts])

    def top(words: list[str]) -> bytes:
        vector = combine(parse_terms(words), encode_texts, lambda _: None)
        return engine.search_vector(vector, k=1)[0].path

    assert top(["beach", "+", "people"]) == b"/p/beach_people.jpg"
    assert top(["beach", "+", "sunset"]) == b"/p/beach_sunset.jpg"
    assert top(["beach", "-", "sunset", "-", "people"]) == b"/p/beach.jpg"
    assert top(["sunset", "+", "3:people", "-", "beach"]) == b"/p/sunset_people.jpg"
    with pytest.raises(BadInput, match="cancel"):
        combine(parse_terms(["beach", "-", "beach"]), encode_texts, lambda _: None)


def test_filters_apply_before_the_cut_to_k(tmp_path):
    target = basis(0)
    recent = 1_700_000_000 * 10**9  # November 2023: dated by modification time
    rows = [
        row(f"/lib/best/{i}.jpg", target + 0.01 * basis(i % 5 + 1), mtime_ns=recent)
        for i in range(20)
    ]
    rows += [
        row("/lib/2019/a.jpg", target + 0.5 * basis(6), taken_at="2019-05-01T10:00:00",
            width=4000, height=3000, camera_make="Canon", camera_model="EOS R5"),
        row("/lib/2019/b.JPG", target + 0.6 * basis(6), taken_at="2019-07-01T10:00:00",
            width=800, height=600, camera_make="NIKON", camera_model="D750"),
        row("/lib/2021/c.png", target + 0.7 * basis(6), taken_at="2021-01-01T00:00:00",
            width=4000, height=3000),
        row("/lib/20190/d.jpg", target + 0.1 * basis(6), mtime_ns=recent),  # outscores 2019
    ]  # fmt: skip
    engine = synthetic_engine(tmp_path, rows)

    def paths(**kwargs) -> list[bytes]:
        return [h.path for h in engine.search_vector(unit(target), k=2, filters=Filters(**kwargs))]

    assert paths(under=("/lib/2019",)) == [b"/lib/2019/a.jpg", b"/lib/2019/b.JPG"]
    assert paths(after="2019-06-01", before="2022") == [b"/lib/2019/b.JPG", b"/lib/2021/c.png"]
    assert paths(before="2019-06-01") == [b"/lib/2019/a.jpg"]
    assert set(paths(after="2019-01-01", before="2020")) == {b"/lib/2019/a.jpg", b"/lib/2019/b.JPG"}
    assert paths(min_width=1000, min_height=2000) == [b"/lib/2019/a.jpg", b"/lib/2021/c.png"]
    assert paths(camera="nikon d750") == [b"/lib/2019/b.JPG"]
    assert paths(camera="canon") == [b"/lib/2019/a.jpg"]
    assert paths(glob="*.png") == [b"/lib/2021/c.png"]
    assert paths(glob="*.JPG") == [b"/lib/2019/b.JPG"]  # an upper-case glob is exact
    assert all(p.startswith(b"/lib/best/") for p in paths(glob="*.jpg"))
    assert paths(glob="*/2019/*") == [b"/lib/2019/a.jpg", b"/lib/2019/b.JPG"]
    assert paths(under=("/lib/2019",), glob="*.png") == []
    with pytest.raises(BadInput, match="malformed date"):
        paths(after="last tuesday")


def test_camera_filter_matches_wildcard_characters_literally(tmp_path):
    target = basis(0)
    rows = [
        row("/lib/a.jpg", target, camera_make="Acme", camera_model="X_100"),
        row("/lib/b.jpg", target + 0.1 * basis(1), camera_make="Acme", camera_model="X1000"),
        row("/lib/c.jpg", target + 0.2 * basis(2), camera_make="50% Optics", camera_model="Z"),
        row("/lib/d.jpg", target + 0.3 * basis(3), camera_make="Back\\slash", camera_model="Q"),
    ]
    engine = synthetic_engine(tmp_path, rows)

    def paths(camera: str) -> list[bytes]:
        hits = engine.search_vector(unit(target), k=4, filters=Filters(camera=camera))
        return [h.path for h in hits]

    assert paths("x_1") == [b"/lib/a.jpg"]  # `_` is not "any character"
    assert paths("%") == [b"/lib/c.jpg"]  # `%` is not "anything"
    assert paths("k\\s") == [b"/lib/d.jpg"]
    assert paths("acme x1") == [b"/lib/b.jpg"]


def test_parse_date_forms():
    assert parse_date("2024-03-01") == "2024-03-01T00:00:00"
    assert parse_date("2024-03-01T12:30") == "2024-03-01T12:30:00"
    assert parse_date("2024") == "2024-01-01T00:00:00"
    assert parse_date("2024-07") == "2024-07-01T00:00:00"
    for bad in ("2024-13", "yesterday", "24-1-1", ""):
        with pytest.raises(BadInput):
            parse_date(bad)


def test_threshold_k_and_brute_force_agree(tmp_path):
    rng = np.random.default_rng(0)
    rows = [row(f"/r/{i:03d}.jpg", rng.standard_normal(DIM)) for i in range(300)]
    engine = synthetic_engine(tmp_path / "a", rows)
    exact = synthetic_engine(tmp_path / "b", rows, exact=True)
    query = unit(rng.standard_normal(DIM))
    fast = engine.search_vector(query, k=10)
    slow = exact.search_vector(query, k=10)
    assert [h.path for h in fast] == [h.path for h in slow]
    assert np.allclose([h.score for h in fast], [h.score for h in slow], atol=1e-5)
    cut = engine.search_vector(query, k=10, threshold=fast[4].score)
    assert [h.path for h in cut] == [h.path for h in fast[:5]]
    assert len(engine.search_vector(query, k=1000)) == 300
    with pytest.raises(BadInput):
        engine.search_vector(query, k=0)


def test_deleted_and_failed_images_never_come_back(tmp_path):
    rows = [row("/d/keep.jpg", basis(0)), row("/d/gone.jpg", basis(0))]
    rows.append(NewImage(b"/d/bad.jpg", 1, 1, b"b" * 16, error="truncated"))
    engine = synthetic_engine(tmp_path, rows)
    gone = next(r.id for r in engine.catalog.all_rows() if r.path == b"/d/gone.jpg")
    Catalog.open(tmp_path).delete_ids([gone])  # deleted after the FAISS file was written
    reopened = Engine.open(tmp_path)
    assert [h.path for h in reopened.search_vector(basis(0), k=5)] == [b"/d/keep.jpg"]


def test_equal_counts_still_see_what_changed(tmp_path):
    # One image deleted and one added after the vector file was saved: the same count.
    engine = synthetic_engine(tmp_path, [row("/e/a.jpg", basis(0)), row("/e/old.jpg", basis(1))])
    engine.close()
    writer = Catalog.open(tmp_path)
    old = next(r.id for r in writer.all_rows() if r.path == b"/e/old.jpg")
    writer.delete_ids([old])
    writer.write_batch([row("/e/new.jpg", basis(1) + 0.1 * basis(2))])
    reopened = Engine.open(tmp_path)
    assert [h.path for h in reopened.search_vector(basis(1), k=1)] == [b"/e/new.jpg"]
    assert len(reopened.search_vector(basis(1), k=5)) == 2


def test_a_search_on_a_newer_catalog_never_trains_nor_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 100)  # an IVF would be due at 100 rows
    engine = synthetic_engine(tmp_path, [row(f"/n/{i}.jpg", basis(i % DIM)) for i in range(20)])
    engine.close()
    file = tmp_path / VECTORS_FILE
    writer = Catalog.open(tmp_path)
    rng = np.random.default_rng(3)
    writer.write_batch([row(f"/n/more{i}.jpg", rng.standard_normal(DIM)) for i in range(300)])
    before = (file.read_bytes(), file.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    reopened = Engine.open(tmp_path)
    assert isinstance(reopened.store.index, faiss.IndexIDMap2)  # the file as it is: no training
    exact = brute_force_knn(reopened.catalog, DIM)
    query = unit(rng.standard_normal(DIM))
    for filters in (None, Filters(glob="more1*")):
        hits = reopened.search_vector(query, k=10, filters=filters)
        allowed = filters.allowed_ids(reopened.catalog) if filters else None
        assert [h.id for h in hits] == exact(query[None], 10, allowed)[1][0].tolist()
    after = (file.read_bytes(), file.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    assert after == before  # the vector file untouched, nothing written beside it


def test_an_open_engine_sees_batches_committed_after_it_opened(tmp_path):
    engine = synthetic_engine(tmp_path, [row("/o/a.jpg", basis(0))])
    writer = Catalog.open(tmp_path)
    writer.write_batch([row("/o/b.jpg", basis(3))])
    assert [h.path for h in engine.search_vector(basis(3), k=1)] == [b"/o/b.jpg"]
    writer.delete_ids([r.id for r in writer.all_rows() if r.path == b"/o/b.jpg"])
    assert [h.path for h in engine.search_vector(basis(3), k=5)] == [b"/o/a.jpg"]
