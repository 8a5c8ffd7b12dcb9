"""The pretrained rerankers' bf16 autocast: chosen as `--precision auto` chooses, close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_hf import KINDS, build

from helpers import write_image
from indexer.errors import BadModelSpec
from indexer.models.precision import cpu_has_native_bf16
from search.rerank.backend import PRECISION_ENV, rerank_precision
from search.rerank.hf_loading import load, resolve

pytest.importorskip("transformers")

TEXT = "a red circle"
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation), and autocast
# rounds every matmul's inputs. On the tiny models (2 layers, weights of std 0.3, log-odds
# spread over 2-7) the measured largest move is 0.05-0.06 for BLIP, ViLT and FLAVA and 0.37 for
# BridgeTower (spread 6.4: its extra cross-modal layers compound the rounding), i.e. 2-6% of
# the spread. 0.1 plus 8% of the spread bounds all four with room; a wrong path (no autocast,
# fp16, a dropped layer) moves them by the whole spread.
ATOL = 0.1
RTOL_OF_SPREAD = 0.08


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Image.Image]:
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        write_image(root / f"p{i}.jpg", seed=10 + i, size=(40 + 9 * i, 56))
    return [Image.open(p).convert("RGB") for p in sorted(root.glob("*.jpg"))]


def _scorer(folder: Path, precision: str, monkeypatch) -> object:
    monkeypatch.setenv(PRECISION_ENV, precision)
    return load(resolve(str(folder)))


def test_bf16_logits_agree_with_fp32_and_keep_the_ranking(checkpoint, images, monkeypatch):
    kind, folder = checkpoint
    fp32 = _scorer(folder, "fp32", monkeypatch)
    bf16 = _scorer(folder, "bf16", monkeypatch)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")  # type: ignore[attr-defined]
    want = fp32.logits(TEXT, images)  # type: ignore[attr-defined]
    got = bf16.logits(TEXT, images)  # type: ignore[attr-defined]
    tolerance = ATOL + RTOL_OF_SPREAD * float(np.ptp(want))
    assert np.max(np.abs(got - want)) <= tolerance, (kind, got, want)
    assert not np.array_equal(got, want), "bf16 autocast must actually have run"
    # the ranking: compared only among candidates fp32 separates by more than twice the
    # tolerance (closer ones may swap within it), and there must be several of those
    order = np.argsort(-want)
    kept = [order[0]]
    for i in order[1:]:
        if want[kept[-1]] - want[i] > 2 * tolerance:
            kept.append(i)
    assert len(kept) >= 3, (kind, want)
    assert list(np.argsort(-got[kept])) == list(range(len(kept)))


def test_blip_cached_vision_path_runs_bf16_too(images, tmp_path, monkeypatch):
    folder = build("blip", tmp_path / "blip")
    fp32 = _scorer(folder, "fp32", monkeypatch)
    bf16 = _scorer(folder, "bf16", monkeypatch)
    want = fp32.logits_from_vision(TEXT, fp32.vision(images))  # type: ignore[attr-defined]
    vision = bf16.vision(images)  # type: ignore[attr-defined]
    assert vision.dtype == np.float32  # the cache stores float32 whatever ran
    got = bf16.logits_from_vision(TEXT, vision)  # type: ignore[attr-defined]
    assert np.max(np.abs(got - want)) <= ATOL + RTOL_OF_SPREAD * float(np.ptp(want))
    assert not np.array_equal(got, want)


def test_precision_defaults_to_fp32_and_auto_follows_the_cpu(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert rerank_precision("cpu") == "fp32"
    assert rerank_precision("cpu", "auto") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert rerank_precision("cuda", "auto") == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert rerank_precision("cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_an_unknown_precision_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(BadModelSpec, match=f"{PRECISION_ENV}=fp8: unknown reranker precision"):
        rerank_precision("cpu")


def test_the_bf16_copy_scores_as_autocast_over_the_fp32_weights(checkpoint, images, monkeypatch):
    """Every kind runs bf16 on a copy whose linear layers are bf16 already, so autocast does not
    recast their weights at every call; it rounds them as autocast would, bit for bit."""
    _, folder = checkpoint
    scorer = _scorer(folder, "bf16", monkeypatch)
    import torch

    got = scorer.logits(TEXT, images)  # type: ignore[attr-defined]
    copy = scorer.inference_model()  # type: ignore[attr-defined]
    scorer._bf16_model = scorer.model  # type: ignore[attr-defined]  # autocast over fp32 weights
    np.testing.assert_array_equal(got, scorer.logits(TEXT, images))  # type: ignore[attr-defined]
    for module in copy.modules():  # and the scores do come from the copy
        if isinstance(module, torch.nn.Linear):
            module.weight.data.zero_()
    scorer._bf16_model = copy  # type: ignore[attr-defined]
    assert not np.array_equal(got, scorer.logits(TEXT, images))  # type: ignore[attr-defined]
