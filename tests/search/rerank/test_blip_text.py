"""BLIP's text side over cached image states: the short cross-attention, its bf16 casts, copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_hf import build

from helpers import write_image
from search.hits import Hit
from search.rerank.backend import PRECISION_ENV
from search.rerank.cross_encoder import CrossEncoderReranker, read_candidate
from search.rerank.fusion import Fusion
from search.rerank.hf_loading import load, resolve
from search.rerank.vision_cache import VisionCache

pytest.importorskip("transformers")

TEXT = "a big red circle on a small blue square and a green triangle"


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    return build("blip", tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    paths = [root / f"p{i}.jpg" for i in range(5)]
    for i, path in enumerate(paths):
        write_image(path, seed=20 + i, size=(36 + 7 * i, 48))
    return paths


def _scorer(folder: Path, precision: str, monkeypatch) -> object:
    monkeypatch.setenv(PRECISION_ENV, precision)
    return load(resolve(str(folder)))


def _transformers_text_side(model, processor, text: str, states) -> np.ndarray:  # noqa: ANN001
    """transformers' own text encoder and ITM head over `states`, as the full forward runs them."""
    import torch

    encoded = processor(text=[text], return_tensors="pt")
    n = states.shape[0]
    with torch.inference_mode():
        out = model.text_encoder(
            input_ids=encoded["input_ids"].expand(n, -1),
            attention_mask=encoded["attention_mask"].expand(n, -1),
            encoder_hidden_states=states,
            encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long),
        )
        two_way = model.itm_head(out.last_hidden_state[:, 0, :])
    return (two_way[:, 1] - two_way[:, 0]).numpy()


def test_short_cross_attention_equals_the_transformers_text_encoder(blip, photos, monkeypatch):
    import torch

    scorer = _scorer(blip, "fp32", monkeypatch)
    images = [Image.open(p).convert("RGB") for p in photos]
    real = scorer.vision(images)  # type: ignore[attr-defined]
    # states far from any the vision model makes, so no structure of them hides an error
    wild = np.random.default_rng(0).normal(0, 3, real.shape).astype(np.float32)
    for vision in (real, wild):
        want = _transformers_text_side(
            scorer.model,
            scorer.processor,
            TEXT,
            torch.from_numpy(vision),  # type: ignore[attr-defined]
        )
        got = scorer.logits_from_vision(TEXT, vision)  # type: ignore[attr-defined]
        assert np.ptp(want) > 0.1, "the states must move the logits for this to mean much"
        assert np.allclose(got, want, atol=1e-5, rtol=1e-5), (got, want)


def test_bf16_copy_rounds_the_weights_as_autocast_does(blip, photos, monkeypatch):
    import torch

    scorer = _scorer(blip, "bf16", monkeypatch)
    pixels = scorer.processor(  # type: ignore[attr-defined]
        images=[Image.open(p).convert("RGB") for p in photos], return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        want = scorer.model.vision_model(pixel_values=pixels).last_hidden_state  # type: ignore[attr-defined]
        got = scorer.inference_model().vision_model(pixel_values=pixels).last_hidden_state  # type: ignore[attr-defined]
    assert torch.equal(got, want)
    assert scorer.model.dtype == torch.float32  # type: ignore[attr-defined]  # explain's model


def _casts(run, shapes: set[tuple[int, ...]]) -> int:  # noqa: ANN001
    """How many dtype casts `run()` makes into tensors of one of `shapes`."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    casting = {torch.ops.aten.to, torch.ops.aten._to_copy, torch.ops.aten.copy_}

    class Count(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            source = args[1] if func.overloadpacket is torch.ops.aten.copy_ else args[0]
            if (func.overloadpacket in casting and tuple(out.shape) in shapes
                    and out.dtype != source.dtype):  # fmt: skip
                Count.count += 1
            return out

    with Count():
        run()
    return Count.count


def test_bf16_cached_path_casts_the_states_once_and_no_weight(blip, photos, monkeypatch):
    import torch

    scorer = _scorer(blip, "bf16", monkeypatch)
    vision = scorer.vision([Image.open(p).convert("RGB") for p in photos])  # type: ignore[attr-defined]
    scorer.logits_from_vision(TEXT, vision)  # type: ignore[attr-defined]  # the bf16 copy is made once
    weights = {tuple(m.weight.shape) for m in scorer.model.modules()  # type: ignore[attr-defined]
               if isinstance(m, torch.nn.Linear)}  # fmt: skip
    assert tuple(vision.shape) not in weights
    run = lambda: scorer.logits_from_vision(TEXT, vision)  # type: ignore[attr-defined]  # noqa: E731
    assert _casts(run, {tuple(vision.shape)}) == 1  # autocast cast them in every layer
    assert _casts(run, weights) == 0  # autocast recast every weight on every call


def _flops(run) -> int:  # noqa: ANN001
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


@pytest.mark.parametrize("cached", [False, True])
def test_copies_of_a_photo_are_scored_once(blip, photos, tmp_path, monkeypatch, cached):
    scorer = _scorer(blip, "fp32", monkeypatch)
    copy = tmp_path / "copy of p0.jpg"
    shutil.copyfile(photos[0], copy)
    paths = [photos[0], photos[1], copy, photos[2]]
    hits = [Hit(i, bytes(p), 0.0, None, None, None) for i, p in enumerate(paths)]
    candidates = [read_candidate(h) for h in hits]
    cache = VisionCache(tmp_path / "cache", max_bytes=10**9) if cached else None
    reranker = CrossEncoderReranker(scorer, Fusion(), cache)  # type: ignore[arg-type]
    distinct = [candidates[0], candidates[1], candidates[3]]
    reranker.logits(TEXT, distinct)  # type: ignore[arg-type]  # fills the cache when there is one
    kept, logits = reranker.logits(TEXT, candidates)  # type: ignore[arg-type]
    assert [c.hit.id for c in kept] == [0, 1, 2, 3]
    assert logits[2] == logits[0]
    _, alone = reranker.logits(TEXT, distinct)  # type: ignore[arg-type]
    assert np.allclose(logits[[0, 1, 3]], alone, atol=1e-6)
    with_copy = _flops(lambda: reranker.logits(TEXT, candidates))  # type: ignore[arg-type]
    assert with_copy == _flops(lambda: reranker.logits(TEXT, distinct))  # type: ignore[arg-type]
