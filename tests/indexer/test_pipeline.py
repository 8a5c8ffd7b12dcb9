"""Indexing runs end to end: tiny real model, real SQLite, real FAISS, real image files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import consistency, write_image
from indexer.errors import BadInput, ModelMismatch
from indexer.media.discovery import WalkOptions
from indexer.pipeline import IndexOptions, run_index
from indexer.progress import Progress
from indexer.store.catalog import Catalog
from indexer.store.vector_store import VECTORS_FILE
from search.engine import Engine
from search.query import Term


def index(directory: Path, *roots: Path, **options) -> dict[str, int | float]:
    return run_index(directory, IndexOptions(roots=roots, **options)).counts()


def test_first_run_indexes_everything_and_records_bad_files(tmp_path, photos, tiny_checkpoint):
    counts = index(tmp_path / "idx", photos, model=tiny_checkpoint)
    assert counts["added"] == 9  # 6 jpg + png + webp + the byte-identical copy
    assert counts["reused"] == 1  # the copy: same bytes, no model call
    assert counts["errors"] == 1
    catalog, live = consistency(tmp_path / "idx")
    assert len(live) == 9
    failed = catalog.all_rows(status="error")
    assert [os.path.basename(r.path) for r in failed] == [b"notes.jpg"]
    assert "not an image" in failed[0].error
    row = next(r for r in catalog.all_rows() if r.path.endswith(b"beach.png"))
    assert (row.width, row.height, row.status) == (96, 72, "ok")


def test_rerun_touches_nothing_unchanged(tmp_path, photos, tiny_checkpoint):
    index(tmp_path / "idx", photos, model=tiny_checkpoint)
    before = (tmp_path / "idx" / VECTORS_FILE).stat().st_mtime_ns
    counts = index(tmp_path / "idx")  # no roots: the index's own; no model: the index's own
    assert counts["unchanged"] == 10
    assert counts["added"] + counts["updated"] + counts["removed"] + counts["errors"] == 0
    assert (tmp_path / "idx" / VECTORS_FILE).stat().st_mtime_ns == before


def test_changed_deleted_and_renamed_files(tmp_path, photos, tiny_checkpoint):
    idx = tmp_path / "idx"
    index(idx, photos, model=tiny_checkpoint)
    old = {r.path: r.id for r in Catalog.open(idx).all_rows()}
    write_image(photos / "img1.jpg", seed=99)  # new content at the same path
    os.utime(photos / "img1.jpg", ns=(1, 10**18))
    (photos / "img2.jpg").unlink()
    (photos / "moved").mkdir()
    shutil.move(photos / "img3.jpg", photos / "moved" / "renamed.jpg")
    counts = index(idx)
    assert (counts["updated"], counts["removed"], counts["added"]) == (1, 2, 1)
    assert counts["reused"] == 1  # the rename kept its vector
    catalog, live = consistency(idx)
    rows = {r.path: r for r in catalog.all_rows()}
    img1 = os.fsencode(photos / "img1.jpg")
    assert rows[img1].id != old[img1]  # a changed file gets a new id; its old vector is gone
    assert os.fsencode(photos / "img2.jpg") not in rows
    renamed = rows[os.fsencode(photos / "moved" / "renamed.jpg")]
    assert old[os.fsencode(photos / "img3.jpg")] not in live  # the old row left FAISS too
    assert renamed.id in live


def test_rename_needs_no_model(tmp_path, photos, tiny_checkpoint):
    """A move only reuses vectors: it succeeds even when the model's weights are gone."""
    idx = tmp_path / "idx"
    checkpoint = Path(tiny_checkpoint.split(":", 1)[1])
    private = tmp_path / "private.pt"
    shutil.copy(checkpoint, private)
    index(idx, photos, model=f"photoseek-tiny:{private}")
    catalog = Catalog.open(idx)
    before = {r.path: r for r in catalog.all_rows(status="ok")}
    private.unlink()
    shutil.move(photos / "trip 2024", photos / "trip 2024 (sorted)")
    counts = index(idx)
    assert counts["reused"] == 2 and counts["removed"] == 3 and counts["errors"] == 1
    after = {r.path: r for r in catalog.all_rows(status="ok")}
    beach = before[os.fsencode(photos / "trip 2024" / "beach.png")]
    moved = after[os.fsencode(photos / "trip 2024 (sorted)" / "beach.png")]
    assert (moved.width, moved.height, moved.content_hash) == (
        beach.width,
        beach.height,
        beach.content_hash,
    )
    consistency(idx)


def test_touched_file_with_same_bytes_reuses_its_vector(tmp_path, photos, tiny_checkpoint):
    idx = tmp_path / "idx"
    index(idx, photos, model=tiny_checkpoint)
    os.utime(photos / "img4.jpg", ns=(1, 10**18))
    counts = index(idx)
    assert (counts["updated"], counts["reused"]) == (1, 1)
    consistency(idx)


def test_dry_run_changes_nothing(tmp_path, photos, tiny_checkpoint):
    idx = tmp_path / "idx"
    index(idx, photos, model=tiny_checkpoint)
    (photos / "img5.jpg").unlink()
    write_image(photos / "new.png", seed=50)
    summary = run_index(idx, IndexOptions(dry_run=True))
    assert summary.to_add == [os.fsencode(photos / "new.png")]
    assert summary.to_remove == [os.fsencode(photos / "img5.jpg")]
    assert index(idx)["added"] == 1  # the dry run did not do it


def test_model_mismatch_is_refused(tmp_path, photos, tiny_checkpoint):
    idx = tmp_path / "idx"
    index(idx, photos, model=tiny_checkpoint)
    other = tmp_path / "other.pt"
    shutil.copy(tiny_checkpoint.split(":", 1)[1], other)
    with open(other, "ab") as f:
        f.write(b"\0")  # different bytes: a different fingerprint
    with pytest.raises(ModelMismatch, match="built with"):
        index(idx, photos, model=f"photoseek-tiny:{other}")


def test_bad_roots_and_options(tmp_path, photos, tiny_checkpoint):
    with pytest.raises(BadInput, match="no such file"):
        index(tmp_path / "idx", tmp_path / "nowhere", model=tiny_checkpoint)
    with pytest.raises(BadInput, match="no folders"):
        index(tmp_path / "idx2")
    with pytest.raises(BadInput):
        index(tmp_path / "idx3", photos, model=tiny_checkpoint, batch_size=0)


def test_excludes_and_hidden(tmp_path, photos, tiny_checkpoint):
    (photos / ".hidden").mkdir()
    write_image(photos / ".hidden" / "secret.jpg", seed=70)
    counts = index(
        tmp_path / "idx",
        photos,
        model=tiny_checkpoint,
        walk=WalkOptions(exclude=("trip 2024",)),
    )
    assert counts["added"] == 7 and counts["errors"] == 0  # 6 jpg + copy; no trip, no hidden


def test_many_batches_and_one_worker(tmp_path, tiny_checkpoint):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        write_image(root / f"{i:03d}.png", seed=100 + i, size=(40 + i, 30))
    counts = index(tmp_path / "idx", root, model=tiny_checkpoint, batch_size=7, workers=1)
    assert counts["added"] == 40
    _, live = consistency(tmp_path / "idx")
    assert len(live) == 40


def test_the_first_committed_batch_of_a_first_index_is_searchable(tmp_path, tiny_checkpoint):
    root = tmp_path / "first"
    root.mkdir()
    for i in range(12):
        write_image(root / f"{i:02d}.png", seed=200 + i)
    seen: list[tuple[int, int]] = []

    def search_now(step: Progress) -> None:
        if step.stage != "embedding" or not step.done or seen:
            return
        with Engine.open(tmp_path / "idx") as engine:  # mid-run, as a user's search would
            hits = engine.search([Term(text="a photo")], k=20)
            seen.append((step.done, len(hits)))

    run_index(
        tmp_path / "idx",
        IndexOptions(roots=(root,), model=tiny_checkpoint, batch_size=4, workers=1),
        search_now,
    )
    assert seen and seen[0][0] < 12 and seen[0][1] == seen[0][0]  # what was committed, no more
