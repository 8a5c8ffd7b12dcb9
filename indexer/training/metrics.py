"""Retrieval quality of a trained encoder + head: recall, ITC alone and reranked, twin accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from indexer.errors import BadInput
from indexer.progress import Progress
from indexer.training.data import Pair, load_pixels
from indexer.training.precision import autocast_dtype
from indexer.training.scoring import (
    EncodedImages,
    EncodedTexts,
    encode_images,
    encode_texts,
    fused_scorer,
    rerank,
)
from indexer.training.trained import Trained


def evaluate(
    trained: Trained,
    pairs: Sequence[Pair],
    *,
    twin_groups: Sequence[int] | None = None,
    ks: Sequence[int] = (8, 16, 32),
    recall_at: Sequence[int] = (1, 5, 10),
    alpha: float | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Retrieval quality on a gallery of (image, caption) pairs, ITC alone and reranked.

    Text->image queries are the distinct captions (relevant: every image with that caption);
    image->text queries are the images. For each k in `ks` the ITC top-k is reordered by the
    fused score (`alpha` defaults to the one chosen at training). With `twin_groups` (one id
    per pair), twin accuracy is how often a caption's own image ranks first among its group's
    images, read from the ITC ranking and from each reranked one.
    """
    alpha = trained.alpha if alpha is None else alpha
    autocast = autocast_dtype("auto", trained.device)
    step = _stepper(progress, 4, "loading the images")
    pixels, _, skipped = load_pixels([p[0] for p in pairs], trained.image_size)
    if skipped:
        raise BadInput(f"unreadable evaluation images: {'; '.join(skipped[:3])}")
    captions = [p[1] for p in pairs]
    step("encoding the images")
    images = encode_images(trained, pixels, autocast=autocast)
    unique = list(dict.fromkeys(captions))
    step("encoding the captions")
    texts = encode_texts(trained, unique, autocast=autocast)
    step("reranking with the ITM head")
    caption_index = {c: i for i, c in enumerate(unique)}
    t2i_relevant: list[set[int]] = [set() for _ in unique]
    for i, c in enumerate(captions):
        t2i_relevant[caption_index[c]].add(i)
    i2t_relevant = [{caption_index[c]} for c in captions]

    report: dict[str, Any] = {
        "images": len(pairs),
        "captions": len(unique),
        "alpha": alpha,
        "t2i": {},
        "i2t": {},
        "twin_accuracy": {},
    }
    rankings = _rankings(trained, texts, images, ks, alpha, autocast)
    step("")
    for name, (t2i, i2t) in rankings.items():
        report["t2i"][name] = _recall(t2i, t2i_relevant, recall_at)
        report["i2t"][name] = _recall(i2t, i2t_relevant, recall_at)
        if twin_groups is not None:
            report["twin_accuracy"][name] = _twin_accuracy(t2i, unique, captions, twin_groups)
    return report


def _stepper(
    progress: Callable[[Progress], None] | None, steps: int, first: str
) -> Callable[[str], None]:
    """Reports the "evaluating" stage as started on `first`; each call then ends a step."""
    done = 0

    def report(now_doing: str) -> None:
        if progress:
            progress(Progress("evaluating", done, steps, "steps", now_doing))

    def step(next_step: str) -> None:
        nonlocal done
        done += 1
        report(next_step)

    report(first)
    return step


def _rankings(
    trained: Trained,
    texts: EncodedTexts,
    images: EncodedImages,
    ks: Sequence[int],
    alpha: float,
    autocast: torch.dtype | None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Full text->image and image->text rankings: by ITC ("itc") and reranked ("rerank@k")."""
    t2i_itc = texts.embeddings @ images.embeddings.T
    i2t_itc = t2i_itc.T.contiguous()
    # Top-k lists for smaller k are prefixes of the largest one: score that once.
    big = max(ks)
    t2i_big = _prefix_scores(
        fused_scorer(trained, texts, images, t2i_itc, alpha, autocast), t2i_itc, big
    )
    i2t_big = _prefix_scores(
        fused_scorer(trained, images, texts, i2t_itc, alpha, autocast), i2t_itc, big
    )
    rankings = {
        "itc": (
            t2i_itc.argsort(dim=1, descending=True, stable=True),
            i2t_itc.argsort(dim=1, descending=True, stable=True),
        )
    }
    for k in ks:
        rankings[f"rerank@{k}"] = (
            rerank(t2i_itc, k, lambda top: t2i_big[:, : top.shape[1]]),
            rerank(i2t_itc, k, lambda top: i2t_big[:, : top.shape[1]]),
        )
    return rankings


def _prefix_scores(
    score: Callable[[torch.Tensor], torch.Tensor], itc: torch.Tensor, k: int
) -> torch.Tensor:
    return score(itc.argsort(dim=1, descending=True, stable=True)[:, : min(k, itc.shape[1])])


def _recall(
    rankings: torch.Tensor, relevant: list[set[int]], ks: Sequence[int]
) -> dict[str, float]:
    firsts = []
    for row, rel in zip(rankings.tolist(), relevant, strict=True):
        firsts.append(next(pos for pos, c in enumerate(row) if c in rel))
    firsts_t = torch.tensor(firsts)
    return {f"R@{k}": float((firsts_t < k).float().mean() * 100) for k in ks}


def _twin_accuracy(
    t2i: torch.Tensor, unique: list[str], captions: list[str], twin_groups: Sequence[int]
) -> float:
    position = torch.empty_like(t2i)
    position.scatter_(1, t2i, torch.arange(t2i.shape[1]).expand_as(t2i).contiguous())
    members: dict[int, list[int]] = {}
    for i, g in enumerate(twin_groups):
        members.setdefault(g, []).append(i)
    caption_index = {c: i for i, c in enumerate(unique)}
    hits = []
    for i, c in enumerate(captions):
        twins = members[twin_groups[i]]
        pos = position[caption_index[c], twins]
        hits.append(twins[int(pos.argmin())] == i)
    return float(np.mean(hits) * 100)
