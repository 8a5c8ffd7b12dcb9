"""The offline demo end to end: on the shipped model, and retrained at a small size."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer.errors import BadInput
from search.demo.run import DemoSize, run_demo
from search.demo.shipped import MANIFEST, read_manifest, regressions, shipped_dir


def _check_queries(report) -> None:  # noqa: ANN001 - a DemoReport
    assert report.page.exists() and len(report.text_queries) == 3
    confused = []  # the dual encoder ranks a twin (same gNNNNN_ prefix) above the right image
    for _caption, plain, reranked, truth in report.text_queries:
        assert len(plain) == len(reranked) == 5
        assert all("itm_prob" in hit.extra for hit in reranked)
        top = os.path.basename(plain[0].path)
        confused.append(top != os.path.basename(truth) and top[:7] == os.path.basename(truth)[:7])
    assert confused == sorted(confused, reverse=True)  # those are shown first
    assert report.image_query is not None and report.image_query[1][0].score > 0.999
    assert report.describe is not None and len(report.describe[1]) == 5
    assert set(report.quality) == {"t2i_r1_itc", "t2i_r1_rerank", "twin_itc", "twin_rerank"}
    page = report.page.read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") >= 30


def test_demo_on_the_shipped_model_trains_nothing_and_matches_its_manifest(tmp_path):
    said: list[str] = []
    report = run_demo(tmp_path / "demo", said.append)
    assert not report.trained_now and report.model == shipped_dir()
    _check_queries(report)
    shipped = read_manifest(shipped_dir()).quality
    assert report.shipped_quality == shipped
    for key, value in shipped.items():  # other CPUs round differently (bf16 or fp32 autocast)
        assert report.quality[key] == pytest.approx(value, abs=0.03), key
    assert report.quality["t2i_r1_rerank"] > report.quality["t2i_r1_itc"] + 0.15
    assert report.quality["twin_rerank"] > report.quality["twin_itc"] + 0.25
    assert not any("training" in line for line in said)


def test_small_retrained_demo_runs_every_query_kind(tmp_path):
    said: list[str] = []
    size = DemoSize(train_groups=24, test_groups=4, pretrain_epochs=1, epochs=1)
    report = run_demo(tmp_path / "demo", said.append, size=size, retrain=True)
    assert report.trained_now and report.model is not None and report.model != shipped_dir()
    _check_queries(report)
    assert report.shipped_quality == read_manifest(shipped_dir()).quality
    assert regressions(report.quality, report.shipped_quality)  # 24 groups, 1 epoch: far worse
    again = run_demo(tmp_path / "demo", said.append, size=size, retrain=True)
    assert not again.trained_now  # the second run reuses the trained model
    assert any("reusing" in line for line in said)


def test_a_damaged_shipped_model_is_refused_in_one_line(tmp_path: Path):
    copy = tmp_path / "demo-model"
    shutil.copytree(shipped_dir(), copy)
    assert read_manifest(copy).files
    name = next(iter(read_manifest(copy).files))
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BadInput, match="not the shipped file"):
        read_manifest(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(BadInput, match="no usable manifest.json"):
        read_manifest(copy)


def test_regressions_name_only_figures_short_of_the_tolerance():
    shipped = {"t2i_r1_rerank": 0.66, "twin_rerank": 0.89}
    assert regressions({"t2i_r1_rerank": 0.62, "twin_rerank": 0.95}, shipped) == []
    assert regressions({"t2i_r1_rerank": 0.50, "twin_rerank": 0.95}, shipped) == [
        "t2i_r1_rerank 50.0% < shipped 66.0%"
    ]
