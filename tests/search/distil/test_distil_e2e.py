"""Distillation end to end: a tiny random BLIP in a local folder teaches the head of a tiny
open_clip index; the student scores as the teacher does, and its folder indexes and reranks
torch-free like any trained model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, assert_runs_without_torch, run
from indexer.models.itm_head import ItmHead
from indexer.models.model_files import HEAD_FILE, HEAD_WEIGHTS
from indexer.training.data import load_pixels
from indexer.training.distil import DistilOptions, DistilQuery
from indexer.training.scoring import encode_images, encode_texts, itm_logits
from indexer.training.trained import Trained, load_trained
from search.distil.agreement import agreement, spearman
from search.distil.run import DistilSettings, distil, student_data, teacher_scores

K = 8


@pytest.fixture(scope="module")
def distilled(distil_gallery, blip_teacher, tmp_path_factory) -> tuple[Path, object]:
    index, _, texts = distil_gallery
    out = tmp_path_factory.mktemp("student")
    options = DistilOptions(epochs=8, texts_per_batch=4, held_out=0.2)
    settings = DistilSettings(texts_file=texts, rerank_k=K, options=options)
    return out, distil(index, str(blip_teacher), out, settings)


def _student_agreement(trained: Trained, images: list[str], queries: list[DistilQuery]) -> dict:
    """Agreement of `trained`'s head (torch) with the teacher's logits in `queries`."""
    pixels, kept, _ = load_pixels(images, trained.image_size)
    assert len(kept) == len(images)
    encoded = encode_images(trained, pixels)
    texts = encode_texts(trained, [q.text for q in queries])
    students = []
    for row, query in enumerate(queries):
        idx = torch.tensor(query.images)
        students.append(itm_logits(trained.head, texts, torch.full_like(idx, row), encoded, idx))
    return agreement([s.numpy() for s in students], [np.array(q.teacher) for q in queries])


def test_student_scores_follow_the_teacher(distilled, distil_gallery, blip_teacher):
    out, report = distilled
    index, _, texts = distil_gallery
    assert (out / HEAD_WEIGHTS).is_file() and report.texts == 15 and report.pairs == 15 * K
    # the cached scores are the training data: read back without scoring anything again
    scored, _ = teacher_scores(index, str(blip_teacher), out, DistilSettings(texts, rerank_k=K))
    images, queries = student_data(scored)
    assert sum(len(q.images) for q in queries) == report.pairs
    trained = load_trained(out)
    learned = _student_agreement(trained, images, queries)
    torch.manual_seed(1)
    untrained = _student_agreement(replace(trained, head=ItmHead(trained.head.config).eval()),
                                   images, queries)  # fmt: skip
    assert learned["spearman"] >= 0.6, learned
    assert untrained["spearman"] < learned["spearman"] - 0.3, (untrained, learned)
    meta = json.loads((out / HEAD_FILE).read_text())
    assert meta["platt"]["scale"] != 1.0  # calibrated on the held-out teacher scores


def test_the_student_indexes_and_reranks_without_torch(distilled, distil_gallery, tmp_path):
    out, _ = distilled
    _, photos, _ = distil_gallery
    index = tmp_path / "student-index"
    done = run("index", str(photos), "--index", str(index), "--model", str(out), "-q")
    assert done.returncode == 0, done.stderr
    found = run("search", "a red circle", "--index", str(index), "--rerank", "--json", "-k", "3")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    hits = hits["results"] if isinstance(hits, dict) else hits
    assert len(hits) == 3 and all(h["calibrated"] for h in hits)
    assert_runs_without_torch(
        "from pathlib import Path\n"
        "from search.engine import Engine\n"
        "from search.query import parse_terms\n"
        f"with Engine.open(Path({str(index)!r})) as engine:\n"
        "    hits = engine.search(parse_terms(['a red circle']), k=3, rerank_k=8)\n"
        "assert len(hits) == 3 and 'itm_prob' in hits[0].extra\n"
    )


def test_eval_reports_agreement_with_the_teacher(distilled, distil_gallery, blip_teacher, tmp_path):
    out, _ = distilled
    _, photos, texts = distil_gallery
    index = tmp_path / "student-index"
    assert (
        run("index", str(photos), "--index", str(index), "--model", str(out), "-q").returncode == 0
    )
    result = run("eval", "--teacher", str(blip_teacher), "--index", str(index),
                 "--texts", str(texts), "--json", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    agree = json.loads(result.stdout)["agreement"]
    assert agree["texts"] == 10 and 0.0 <= agree["top1"] <= 1.0
    assert agree["spearman"] >= 0.4, agree  # the index's ITC top-32, the student's own pools


def test_spearman():
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 1]), np.array([3, 2, 1])) == 0.0


def test_bad_distil_input_is_one_line(distil_gallery, blip_teacher, tmp_path):
    index, _, texts = distil_gallery
    base = ("train", "--out", str(tmp_path / "o"), "--index", str(index), "--texts", str(texts))
    assert_one_line_error(run(*base, "--teacher", str(blip_teacher), "--loss", "mse"), "--loss")
    assert_one_line_error(run(*base, "--teacher", str(tmp_path)), "not a reranker")
    missing = ("--texts", str(tmp_path / "none.txt"))
    assert_one_line_error(run(*base, *missing, "--teacher", str(blip_teacher)), "cannot read")
    assert_one_line_error(run("train", "--out", str(tmp_path / "o")), "--pairs")
    assert_one_line_error(run("eval", "--index", str(index)), "--teacher")


def test_train_teacher_from_the_cli(distil_gallery, blip_teacher, tmp_path):
    index, _, texts = distil_gallery
    out = tmp_path / "cli-student"
    result = run("train", "--teacher", str(blip_teacher), "--index", str(index), "--out", str(out),
                 "--texts", str(texts), "--budget-pairs", "40", "--epochs", "1", "--loss", "bce",
                 "--json", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # whole texts with their edits, 32 candidates each (16 images: all of them), until >= 40
    assert summary["pairs"] >= 40 and summary["pairs"] % 16 == 0 and summary["epochs_run"] == 1
    assert (out / HEAD_WEIGHTS).is_file() and list((out / "teacher-scores").glob("*/batch-*.json"))
