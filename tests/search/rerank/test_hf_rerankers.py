"""Pretrained ITM rerankers through transformers, from tiny random checkpoints saved offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_hf import KINDS, build

from helpers import assert_one_line_error, assert_runs_without_torch, run, write_image
from indexer.pipeline import IndexOptions, run_index
from search.hits import Hit
from search.rerank.cross_encoder import CrossEncoderReranker, read_candidate
from search.rerank.fusion import Fusion
from search.rerank.hf_loading import load, resolve
from search.rerank.vision_cache import VisionCache

pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    """(kind, folder): one tiny checkpoint per backend, built once for the module."""
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def blip(tmp_path_factory) -> Path:
    return build("blip", tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_checkpoint) -> tuple[Path, Path]:
    """(index, photos): a few photos of different sizes indexed with the tiny open_clip."""
    root = tmp_path_factory.mktemp("gallery")
    photos = root / "photos"
    photos.mkdir()
    for i in range(6):
        write_image(photos / f"p {i}.jpg", seed=i, size=(40 + 9 * i, 56))
    index = root / "index"
    run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    return index, photos


def _images(photos: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))]


def _direct(kind: str, folder: Path, text: str, images: list[Image.Image]) -> np.ndarray:
    """The transformers model called directly on the processor's inputs."""
    import torch
    import transformers as t

    processor = t.AutoProcessor.from_pretrained(folder)
    inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        if kind == "blip":
            two = t.BlipForImageTextRetrieval.from_pretrained(folder)(**inputs).itm_score
        elif kind == "vilt":
            return t.ViltForImageAndTextRetrieval.from_pretrained(folder)(**inputs).logits[:, 0]
        elif kind == "bridgetower":
            two = t.BridgeTowerForImageAndTextRetrieval.from_pretrained(folder)(**inputs).logits
        else:
            model = t.FlavaForPreTraining.from_pretrained(folder)
            two = model(
                **inputs, input_ids_masked=inputs["input_ids"], return_loss=False
            ).itm_logits
    return (two[:, 1] - two[:, 0]).numpy()


def test_adapter_logit_is_the_models_and_batches_change_nothing(checkpoint, gallery):
    kind, folder = checkpoint
    images = _images(gallery[1])
    scorer = load(resolve(str(folder)))
    got = scorer.logits("a red circle", images)
    assert np.allclose(got, _direct(kind, folder, "a red circle", images), atol=1e-4)
    one_by_one = np.concatenate([scorer.logits("a red circle", [im]) for im in images])
    assert np.allclose(got, one_by_one, atol=1e-4)
    assert np.ptp(got) > 1e-3, "the tiny model must tell the images apart for this to mean much"


def test_blip_cached_vision_equals_the_full_forward(blip, gallery, tmp_path):
    scorer = load(resolve(str(blip)))
    images = _images(gallery[1])
    split = scorer.logits_from_vision("a red circle", scorer.vision(images))
    assert np.allclose(split, scorer.logits("a red circle", images), atol=1e-5)
    hits = [Hit(i, bytes(p), 0.1 * i, None, None, None)
            for i, p in enumerate(sorted(gallery[1].glob("*.jpg")))]  # fmt: skip
    cache = VisionCache(tmp_path / "cache", max_bytes=10**9)
    cached = CrossEncoderReranker(scorer, Fusion(), cache).rerank(
        lambda _: {}, "a red circle", hits
    )
    plain = CrossEncoderReranker(scorer, Fusion(), None)
    fresh = plain.rerank(lambda _: {}, "a red circle", hits)
    assert [h.id for h in cached] == [h.id for h in fresh]
    assert np.allclose([h.score for h in cached], [h.score for h in fresh], atol=1e-5)
    assert len(list((tmp_path / "cache").glob("*/*.npy"))) == len(hits)


def test_vision_cache_survives_a_restart_and_stays_bounded(blip, gallery, tmp_path):
    scorer = load(resolve(str(blip)))
    candidates = [read_candidate(Hit(i, bytes(p), 0.0, None, None, None))
                  for i, p in enumerate(sorted(gallery[1].glob("*.jpg")))]  # fmt: skip
    first = VisionCache(tmp_path / "c", max_bytes=10**9)
    vision, _ = CrossEncoderReranker(scorer, Fusion(), first).vision(candidates)  # type: ignore[arg-type]
    entry = first.entry_bytes(candidates[0].digest)  # type: ignore[union-attr]
    again = VisionCache(tmp_path / "c", max_bytes=10**9)  # a new process would open it so
    for c, expected in zip(candidates, vision, strict=True):
        assert np.array_equal(again.get(c.digest), expected)  # type: ignore[union-attr]
    small = VisionCache(tmp_path / "small", max_bytes=3 * entry)
    reranker = CrossEncoderReranker(scorer, Fusion(), small)
    reranker.vision(candidates)  # type: ignore[arg-type]
    assert small.bytes_used() <= 3 * entry
    assert len(list((tmp_path / "small").glob("*/*.npy"))) == 3
    assert small.get(candidates[-1].digest) is not None  # type: ignore[union-attr]  # newest kept


def test_cli_search_reranks_with_a_folder(blip, gallery):
    index, _ = gallery
    result = run("search", "a red circle", "--index", str(index), "--rerank", "--reranker",
                 str(blip), "--rerank-k", "6", "-k", "4", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 4
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert hit["calibrated"] is False
        assert hit["score"] == pytest.approx(hit["itm_logit"], abs=1e-5)  # alpha 0 uncalibrated
        assert hit["itm_prob"] == pytest.approx(1 / (1 + math.exp(-hit["itm_logit"])), abs=1e-5)
        assert -1.0 <= hit["itc_score"] <= 1.0


def test_calibrate_stores_a_fit_the_search_uses(blip, gallery, tmp_path):
    index, photos = gallery
    pairs = tmp_path / "pairs.jsonl"
    captions = ["a red circle", "a blue square", "a green triangle"]
    pairs.write_text("".join(
        json.dumps({"image": str(p), "caption": captions[i % 3]}) + "\n"
        for i, p in enumerate(sorted(photos.glob("*.jpg")))
    ))  # fmt: skip
    done = run("calibrate", "--pairs", str(pairs), "--reranker", str(blip), "--index",
               str(index), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    fit = json.loads(done.stdout)
    assert len(fit["platt"]) == 2 and Path(fit["stored"]).is_file()
    result = run("search", "a red circle", "--index", str(index), "--rerank", "--reranker",
                 str(blip), "--json")  # fmt: skip
    hits = json.loads(result.stdout)
    assert hits and all(h["calibrated"] is True for h in hits)
    scale, bias = fit["platt"]
    for hit in hits:
        z = scale * hit["score"] + bias
        assert hit["itm_prob"] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-4)


def test_index_fills_the_rerank_cache(blip, gallery):
    index, photos = gallery
    result = run("index", str(photos), "--index", str(index), "--rerank-cache", str(blip))
    assert result.returncode == 0, result.stderr
    assert "bytes per image" in result.stderr
    assert list((index / "rerank" / "vision").glob("*/*/*.npy"))


def test_bad_rerankers_are_one_line(gallery, tmp_path):
    index, _ = gallery
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    search = ("search", "a dog", "--index", str(index), "--rerank", "--reranker")
    assert_one_line_error(run(*search, str(empty)), "not a reranker")
    assert_one_line_error(run(*search, str(other)), "model_type 'bert'")
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "transformers.py").write_text("raise ImportError('no transformers here')\n")
    missing = run(*search, str(other), env={"PYTHONPATH": f"{blocked}"})
    assert_one_line_error(missing, "pip install 'photoseek[hf]'")


def test_plain_and_head_queries_never_import_torch(gallery):
    index, _ = gallery
    assert_runs_without_torch(
        "import search.cli.rerank_cmds, search.rerank.kinds\n"
        "from search.query import parse_terms\n"
        "from search.wiring import build_engine\n"
        f"with build_engine({str(index)!r}, reranker='head') as engine:\n"
        "    assert engine.search(parse_terms(['a dog']), k=2)\n"
        "    assert engine.reranker is None\n"
    )


def test_rerankers_lists_the_kinds():
    result = run("rerankers", "--json")
    assert result.returncode == 0, result.stderr
    kinds = [k["kind"] for k in json.loads(result.stdout)]
    assert kinds == ["head", "blip", "vilt", "bridgetower", "flava", "photoseek"]


def test_bf16_vision_states_are_cached_apart_from_fp32_ones(blip, gallery, monkeypatch):
    """A cache filled in one precision is never read by runs in the other."""
    from search.rerank.kinds import open_reranker

    index, _ = gallery
    monkeypatch.setenv("PHOTOSEEK_RERANK_PRECISION", "fp32")
    fp32 = open_reranker(str(blip), index)
    monkeypatch.setenv("PHOTOSEEK_RERANK_PRECISION", "bf16")
    bf16 = open_reranker(str(blip), index)
    assert fp32.checkpoint.fingerprint == bf16.checkpoint.fingerprint
    assert fp32.reranker.cache.folder != bf16.reranker.cache.folder
    assert fp32.reranker.cache.folder.name == fp32.checkpoint.fingerprint
