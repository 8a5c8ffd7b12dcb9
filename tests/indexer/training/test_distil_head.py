"""`distil_head` on plain data: image files and per-text teacher logits, no search code."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import photo_folder
from indexer.errors import BadInput
from indexer.models.model_files import HEAD_FILE
from indexer.training.checkpoints import STATE_FILE
from indexer.training.distil import DistilOptions, DistilQuery, distil_head
from indexer.training.trained import load_trained


def _queries(count: int, images: int) -> list[DistilQuery]:
    """Texts whose teacher prefers image (t mod images), with one unreadable-free pool each."""
    out = []
    for t in range(count):
        pool = tuple((t + j) % images for j in range(4))
        out.append(DistilQuery(f"text {t}", pool, tuple(3.0 if j == 0 else -1.0 for j in range(4))))
    return out


def test_distil_writes_a_model_folder_and_resumes(tmp_path: Path, tiny_checkpoint: str):
    photos = photo_folder(tmp_path, 6)
    images = sorted(str(p) for p in photos.iterdir())
    (photos / "broken.png").write_text("not an image")
    images.append(str(photos / "broken.png"))
    out = tmp_path / "out"
    options = DistilOptions(epochs=2, texts_per_batch=4, loss="bce")
    queries = [*_queries(10, 6), DistilQuery("only broken", (6,), (1.0,))]
    result = distil_head(tiny_checkpoint, images, queries, out, options, device="cpu")
    assert result.epochs_run == 2 and result.skipped and "broken.png" in result.skipped[0]
    assert (out / HEAD_FILE).is_file() and (out / STATE_FILE).is_file()
    trained = load_trained(out)  # the head loads for the saved encoder: fingerprints agree
    assert trained.alpha == result.alpha
    again = distil_head(tiny_checkpoint, images, queries, out, options, device="cpu")
    assert again.epochs_run == 0  # the finished state was found and nothing retrained
    with pytest.raises(BadInput, match="other settings"):
        distil_head(tiny_checkpoint, images, queries, out, DistilOptions(epochs=3, loss="bce"))


def test_bad_distil_data_is_refused(tmp_path: Path, tiny_checkpoint: str):
    images = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    with pytest.raises(BadInput, match="--loss"):
        distil_head(tiny_checkpoint, images, _queries(4, 2), tmp_path, DistilOptions(loss="mse"))
    with pytest.raises(BadInput, match="at least two texts"):
        distil_head(tiny_checkpoint, images, _queries(1, 2), tmp_path)
    bad = [DistilQuery("x", (0, 5), (1.0, 2.0)), DistilQuery("y", (0,), (1.0,))]
    with pytest.raises(BadInput, match="do not match"):
        distil_head(tiny_checkpoint, images, bad, tmp_path)
