"""The offline demo end to end, at a small size: every query kind runs and the page is written."""

from __future__ import annotations

import os

from search.demo.run import DemoSize, run_demo


def test_small_demo_runs_every_query_kind(tmp_path):
    said: list[str] = []
    size = DemoSize(train_groups=24, test_groups=4, pretrain_epochs=1, epochs=1)
    report = run_demo(tmp_path / "demo", said.append, size=size)
    assert report.trained_now and report.page.exists()
    assert len(report.text_queries) == 3
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
    again = run_demo(tmp_path / "demo", said.append, size=size)
    assert not again.trained_now  # the second run reuses the trained model
    assert any("reusing" in line for line in said)
