"""What a re-index remembers and retries: walk options per root, failed files, reused vectors."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from helpers import consistency, write_image
from indexer.media.discovery import WalkOptions
from indexer.pipeline import IndexOptions, run_index
from indexer.store.catalog import Catalog


def index(directory: Path, *roots: Path, **options) -> dict[str, int | float]:
    return run_index(directory, IndexOptions(roots=roots, **options)).counts()


def test_walk_options_are_stored_with_the_root(tmp_path, photos, tiny_checkpoint):
    idx = tmp_path / "idx"
    write_image(photos / ".hidden.jpg", seed=50)
    walk = WalkOptions(include_hidden=True, exclude=("trip*",))
    first = index(idx, photos, model=tiny_checkpoint, walk=walk)
    assert first["added"] == 8  # 6 + the copy + the hidden one; trip 2024 excluded
    again = index(idx)  # plain re-index: the root's own options
    assert (again["added"], again["removed"], again["unchanged"]) == (0, 0, 8)
    rows = {os.path.basename(r.path) for r in Catalog.open(idx).all_rows()}
    assert b".hidden.jpg" in rows and b"beach.png" not in rows


def _corrupt_same_size(path: Path) -> tuple[bytes, int]:
    good = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"\x00" * 64 + good[64:])  # the same size, no longer a recognisable image
    os.utime(path, ns=(mtime, mtime))
    return good, mtime


def _restore(path: Path, good: bytes, mtime: int) -> None:
    path.write_bytes(good)
    os.utime(path, ns=(mtime, mtime))  # same size and mtime: looks unchanged


def _failed_then_readable(tmp_path: Path, checkpoint: str) -> Path:
    """An index that recorded a.jpg as failed, whose file now reads, at the same size and mtime."""
    idx, photos = tmp_path / "idx", tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.jpg", seed=1)
    write_image(photos / "fine.jpg", seed=9)  # the index needs one image to know its model
    good, mtime = _corrupt_same_size(photos / "a.jpg")
    assert index(idx, photos, model=checkpoint)["errors"] == 1
    _restore(photos / "a.jpg", good, mtime)
    return idx


def test_errors_are_retried_with_retry_errors(tmp_path, tiny_checkpoint):
    idx = _failed_then_readable(tmp_path, tiny_checkpoint)
    assert index(idx)["unchanged"] == 2  # same decoder, no flag: not retried
    counts = index(idx, retry_errors=True)
    assert (counts["updated"], counts["errors"]) == (1, 0)
    assert Catalog.open(idx).counts()["images"] == 2


def test_errors_are_retried_when_the_decoder_changed(tmp_path, tiny_checkpoint):
    idx = _failed_then_readable(tmp_path, tiny_checkpoint)
    # An error recorded by another decoder version, as an older photoseek left it.
    with sqlite3.connect(idx / "catalog.sqlite") as conn:
        conn.execute("UPDATE images SET decoder = 'pillow 1.0' WHERE status = 'error'")
    counts = index(idx)
    assert (counts["updated"], counts["errors"]) == (1, 0)


def test_a_vector_is_never_reused_from_a_row_deleted_earlier_in_the_run(tmp_path, tiny_checkpoint):
    """a gets new bytes and b gets a's old ones, whose row an earlier batch of the run replaced."""
    idx, photos = tmp_path / "idx", tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.jpg", seed=1)
    write_image(photos / "b.jpg", seed=2)
    index(idx, photos, model=tiny_checkpoint)
    old_a = (photos / "a.jpg").read_bytes()
    write_image(photos / "a.jpg", seed=3)
    (photos / "b.jpg").write_bytes(old_a)
    for name in ("a.jpg", "b.jpg"):
        os.utime(photos / name, ns=(1, 10**18))
    counts = index(idx, batch_size=1, workers=1)
    assert (counts["updated"], counts["errors"]) == (2, 0)
    catalog, live = consistency(idx)
    assert len(live) == 2 and catalog.counts()["errors"] == 0
