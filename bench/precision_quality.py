"""R@1 and twin accuracy of a trained model folder on its gallery, per image-tower engine.

Texts are always encoded by torch in fp32; only the image side (embeddings and the ITM head's
stored tokens, what an index holds) changes with the engine. The rankings are the ones
`photoseek eval` reports (`indexer.training.metrics`), ITC alone and reranked at k = 32.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from lib.tables import say

RERANK_K = 32


def gallery_figures(
    model_dir: Path, gallery: Path, threads: int, env: dict[str, str]
) -> dict[str, dict[str, float]]:
    """{engine: {r1_itc, r1_rerank, twin_itc, twin_rerank, cos_min}} on the gallery."""
    import torch
    from precision_bench import quantized_visual

    from indexer.models.loading import ModelSpec
    from indexer.towers.image_engine import open_onnx_engine
    from indexer.training.data import load_pixels
    from indexer.training.pairs import read_pairs
    from indexer.training.scoring import EncodedImages, encode_images, encode_texts
    from indexer.training.trained import load_trained

    os.environ.update(env)  # the engines' cache: the benchmark's, not the user's
    torch.set_num_threads(threads)
    trained = load_trained(model_dir)
    rows = read_pairs(gallery / "test.jsonl")
    pixels, _, _ = load_pixels([r.image for r in rows], trained.image_size)
    captions = [r.caption for r in rows]
    texts = encode_texts(trained, list(dict.fromkeys(captions)), autocast=None)
    images = {"torch fp32": encode_images(trained, pixels, autocast=None)}
    images["torch bf16 (autocast)"] = encode_images(trained, pixels, autocast=torch.bfloat16)
    quantized = copy.deepcopy(trained)
    quantized.model.visual = quantized_visual(quantized.model.visual)
    images["torch int8 (torch.ao dynamic)"] = encode_images(quantized, pixels, autocast=None)
    nhwc = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    for precision in ("fp32", "int8"):
        engine = open_onnx_engine(ModelSpec.parse(str(model_dir)), precision, threads)
        embeddings, tokens = engine.with_tokens(nhwc)
        assert tokens is not None  # a model folder from `photoseek train` has its head
        name = f"onnxruntime {precision}" + (" (dynamic)" if precision == "int8" else "")
        images[name] = EncodedImages(torch.from_numpy(embeddings), torch.from_numpy(tokens))
    reference = images["torch fp32"].embeddings.numpy()
    out = {}
    for name, encoded in images.items():
        figures = _figures(trained, texts, encoded, captions, [r.group for r in rows])
        cosines = (encoded.embeddings.numpy() * reference).sum(axis=1)
        out[name] = {**figures, "cos_min": float(cosines.min())}
        say(f"  quality {name:40s} " + " ".join(f"{k} {v:.3f}" for k, v in out[name].items()))
    return out


def _figures(trained, texts, images, captions, groups) -> dict[str, float]:  # noqa: ANN001
    """Text->image R@1 and twin accuracy (fractions), ITC and reranked, as `evaluate` scores
    them (its ranking helpers, called with the image side given)."""
    from indexer.training import metrics

    unique = list(dict.fromkeys(captions))
    relevant: list[set[int]] = [set() for _ in unique]
    for i, caption in enumerate(captions):
        relevant[unique.index(caption)].add(i)
    rankings = metrics._rankings(trained, texts, images, (RERANK_K,), trained.alpha, None)
    out = {}
    for key, name in (("itc", "itc"), ("rerank", f"rerank@{RERANK_K}")):
        t2i = rankings[name][0]
        out[f"r1_{key}"] = metrics._recall(t2i, relevant, (1,))["R@1"] / 100
        if all(g is not None for g in groups):
            out[f"twin_{key}"] = metrics._twin_accuracy(t2i, unique, captions, groups) / 100
    return out
