"""Missing folders and drives: rows under what could not be listed are kept offline, never lost."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import consistency, write_image
from indexer.pipeline import IndexOptions, run_index
from indexer.store.catalog import Catalog
from indexer.store.roots import forget, list_roots
from search.engine import Engine
from search.filters import Filters
from search.tools.status import index_status


def index(directory: Path, *roots: Path, **options) -> dict[str, int | float]:
    return run_index(directory, IndexOptions(roots=roots, **options)).counts()


def private_model(tmp_path: Path, tiny_checkpoint: str) -> tuple[str, Path]:
    """A model whose weights the test can delete, to prove that a later run needs no model."""
    private = tmp_path / "private.pt"
    shutil.copy(tiny_checkpoint.split(":", 1)[1], private)
    return f"photoseek-tiny:{private}", private


def share(tmp_path: Path) -> tuple[Path, Path]:
    """A photo folder holding a symlink to a 'network share' with two pictures."""
    target = tmp_path / "share"
    target.mkdir()
    write_image(target / "s1.jpg", seed=41)
    write_image(target / "s2.jpg", seed=42)
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "local.jpg", seed=40)
    (photos / "nas").symlink_to(target, target_is_directory=True)
    return photos, target


def test_dead_symlink_to_a_share_keeps_its_rows_offline_and_they_return(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    photos, target = share(tmp_path)
    model, weights = private_model(tmp_path, tiny_checkpoint)
    assert index(idx, photos, model=model)["added"] == 3
    target.rename(tmp_path / "unplugged")  # the share is gone: `nas` is a dead symlink
    counts = index(idx)
    assert counts["removed"] == 0 and counts["offline"] == 2
    status = index_status(idx)
    assert (status["images"], status["offline"], status["vectors"]) == (1, 2, 1)
    consistency(idx)  # offline rows left FAISS: searches do not return them
    weights.unlink()  # coming back must not need the model
    (tmp_path / "unplugged").rename(target)
    counts = index(idx)
    changes = (counts["added"], counts["updated"], counts["removed"], counts["offline"])
    assert changes == (0, 0, 0, 0) and counts["unchanged"] == 3
    status = index_status(idx)
    assert (status["images"], status["offline"], status["vectors"]) == (3, 0, 3)
    consistency(idx)


def test_a_missing_root_is_skipped_with_a_warning(tmp_path, tiny_checkpoint, caplog):
    idx = tmp_path / "idx"
    a, b = tmp_path / "a", tmp_path / "b"
    for n, folder in enumerate((a, b)):
        folder.mkdir()
        write_image(folder / "x.jpg", seed=n)
    index(idx, a, b, model=tiny_checkpoint)
    b.rename(tmp_path / "b-unmounted")
    write_image(a / "new.jpg", seed=7)
    with caplog.at_level(logging.WARNING):
        counts = index(idx)  # no PATH: every known root, the missing one skipped
    assert counts["added"] == 1 and counts["removed"] == 0 and counts["offline"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(b) in w for w in warnings)
    states = {info.path: info for info in list_roots(idx)}
    assert states[os.fsencode(b)].state == "missing" and states[os.fsencode(b)].offline == 1
    assert states[os.fsencode(a)].state == "online" and states[os.fsencode(a)].images == 2


def test_an_empty_mount_point_keeps_its_rows(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    drive = tmp_path / "drive"
    (drive / "2019").mkdir(parents=True)
    write_image(drive / "2019" / "p.jpg", seed=1)
    write_image(drive / "q.jpg", seed=2)
    index(idx, drive, model=tiny_checkpoint)
    shutil.move(drive, tmp_path / "elsewhere")
    drive.mkdir()  # the mount point, with nothing mounted on it
    counts = index(idx)
    assert counts["removed"] == 0 and counts["offline"] == 2
    assert Catalog.open(idx).counts()["offline"] == 2


def test_a_file_missing_from_a_listed_folder_is_gone(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    photos, _target = share(tmp_path)
    index(idx, photos, model=tiny_checkpoint)
    (photos / "local.jpg").unlink()
    counts = index(idx)
    assert counts["removed"] == 1 and counts["offline"] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists every folder")
def test_an_unlistable_folder_keeps_its_rows(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    locked = tmp_path / "photos" / "locked"
    locked.mkdir(parents=True)
    write_image(locked / "p.jpg", seed=3)
    index(idx, tmp_path / "photos", model=tiny_checkpoint)
    locked.chmod(0)
    try:
        counts = index(idx)
    finally:
        locked.chmod(0o755)
    assert counts["removed"] == 0 and counts["offline"] == 1


def test_search_include_offline_prune_and_forget(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    photos, target = share(tmp_path)
    index(idx, photos, model=tiny_checkpoint)
    target.rename(tmp_path / "unplugged")
    index(idx)
    with Engine.open(idx) as engine:
        ids = [r.id for r in engine.catalog.all_rows() if r.status == "offline"]
        query = engine.catalog.vectors(np.array(ids[:1]), engine.record.dim)[0]
        default = [h.id for h in engine.search_vector(query, k=5)]
        assert not set(default) & set(ids)
        shown = engine.search_vector(query, k=5, filters=Filters(include_offline=True))
        assert shown[0].id == ids[0] and shown[0].score == pytest.approx(1.0, abs=1e-5)
        assert {h.id for h in shown} >= set(ids)
        under = Filters(under=(str(photos / "nas"),), include_offline=True)
        assert {h.id for h in engine.search_vector(query, k=5, filters=under)} == set(ids)
    counts = index(idx, prune=True)
    assert counts["removed"] == 2
    assert index_status(idx)["offline"] == 0
    consistency(idx)
    removed = forget(idx, photos)
    assert removed == 1
    assert list_roots(idx) == []
    assert Catalog.open(idx).counts() == {"images": 0, "errors": 0, "offline": 0}


def test_forget_a_folder_under_a_root_sticks(tmp_path, tiny_checkpoint):
    idx = tmp_path / "idx"
    photos = tmp_path / "photos"
    (photos / "junk").mkdir(parents=True)
    write_image(photos / "keep.jpg", seed=1)
    write_image(photos / "junk" / "a.jpg", seed=2)
    index(idx, photos, model=tiny_checkpoint)
    assert forget(idx, photos / "junk") == 1
    _catalog, live = consistency(idx)
    assert len(live) == 1
    counts = index(idx)  # a plain re-index does not bring the forgotten folder back
    assert counts["added"] == 0 and counts["unchanged"] == 1
