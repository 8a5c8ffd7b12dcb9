"""`distil_head` on plain data: image files and per-text teacher logits, no search code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import photo_folder
from indexer.errors import BadInput
from indexer.models.model_files import HEAD_FILE
from indexer.training.checkpoints import STATE_FILE
from indexer.training.distil import (
    DistilOptions,
    DistilQuery,
    distil_head,
    itc_weight,
    teacher_level,
)
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


def test_a_finished_run_with_other_teacher_scores_is_not_resumed(tmp_path: Path, tiny_checkpoint):
    """Same options and sizes, other targets (another teacher, or its scores redefined): the
    state in OUT was trained on the old ones and must not pass for this run's."""
    images = sorted(str(p) for p in photo_folder(tmp_path, 4).iterdir())
    options = DistilOptions(epochs=1, texts_per_batch=4, loss="bce")
    queries = _queries(6, 4)
    distil_head(tiny_checkpoint, images, queries, tmp_path / "out", options, device="cpu")
    flipped = [DistilQuery(q.text, q.images, tuple(-t for t in q.teacher)) for q in queries]
    with pytest.raises(BadInput, match="other settings"):
        distil_head(tiny_checkpoint, images, flipped, tmp_path / "out", options, device="cpu")


def test_alpha_is_the_teachers_slope_on_itc_inside_each_pool():
    """The fused student is head + alpha x ITC: alpha takes what ITC explains of the teacher,
    whatever each text's level, so the head is left to learn the rest."""
    g = torch.Generator().manual_seed(0)
    itc = torch.randn(5, 8, generator=g) * 4
    mask = torch.ones(5, 8)
    mask[2, 5:] = 0
    levels = torch.randn(5, 1, generator=g) * 10  # a reranking is blind to these
    teacher = 3.0 * itc + levels + 0.01 * torch.randn(5, 8, generator=g)
    teacher[mask == 0] = 1e3  # padding must not count
    assert itc_weight(teacher, itc, mask) == pytest.approx(3.0, abs=0.01)
    assert itc_weight(-teacher, itc, mask) == 0.0  # never against ITC
    assert itc_weight(teacher, torch.zeros_like(itc), mask) == 0.0
    # where the head's logit starts: the mean level the teacher puts on top of alpha x ITC
    real = mask.bool()
    expected = float((teacher - 3.0 * itc)[real].mean())
    assert teacher_level(teacher, itc, mask, 3.0) == pytest.approx(expected, rel=1e-5)
