"""Training data: decoded pixels, tokenised captions, the held-out split and the batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from indexer.errors import BadInput, UnreadableImage
from indexer.media.decode import decode
from indexer.training.grounding import Box, GroundTargets, ground_targets

log = logging.getLogger(__name__)

Pair = tuple[str | os.PathLike[str], str] | tuple[str | os.PathLike[str], str, Sequence[str]]


@dataclass(frozen=True)
class TrainData:
    """The readable pairs of a run, decoded and tokenised once."""

    pixels: torch.Tensor  # uint8 [N, 3, S, S], on the CPU
    captions: list[str]
    negatives: list[list[str]]  # each pair's own negative captions (maybe none)
    group_ids: list[int]  # pairs sharing an id are batched together
    texts: torch.Tensor  # the captions' token ids, on the device
    caption_ids: torch.Tensor  # one id per distinct caption, on the device
    groups: torch.Tensor  # `group_ids` on the device
    skipped: list[str]  # "path: reason" for images that could not be read
    ground: GroundTargets | None = None  # with boxes only; on the CPU


@dataclass(frozen=True)
class Grounding:
    """What `read_training_data` needs to build `GroundTargets`: one box dict per pair and
    the head's (patch grid side, stored tokens before the patches)."""

    boxes: Sequence[Mapping[str, Box]]
    head_grid: tuple[int, int]


def check_run(
    pairs: Sequence[object], epochs: int, batch_size: int, groups: Sequence[int] | None
) -> None:
    """The arguments every training run shares, or BadInput saying which is wrong."""
    if not pairs:
        raise BadInput("no training pairs")
    if epochs < 1 or batch_size < 2:
        raise BadInput("epochs must be >= 1 and batch_size >= 2")
    if groups is not None and len(groups) != len(pairs):
        raise BadInput(f"{len(groups)} group ids for {len(pairs)} pairs")


def read_training_data(
    pairs: Sequence[Pair],
    groups: Sequence[int] | None,
    size: int,
    tokenizer: Any,
    device: str,
    grounding: Grounding | None = None,
) -> TrainData:
    """Decode and tokenise `pairs`, skipping (and logging) unreadable images."""
    if grounding is not None and len(grounding.boxes) != len(pairs):
        raise BadInput(f"{len(grounding.boxes)} box sets for {len(pairs)} pairs")
    pixels, kept, skipped = load_pixels([p[0] for p in pairs], size)
    for reason in skipped:
        log.warning("skipping %s", reason)
    readable = [pairs[i] for i in kept]
    if len(readable) < 2:
        raise BadInput("fewer than two readable training images")
    group_ids = [groups[i] for i in kept] if groups is not None else list(range(len(readable)))
    captions = [p[1] for p in readable]
    vocab = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    texts = tokenize(tokenizer, captions, device)
    ground = None
    if grounding is not None:
        boxes = [grounding.boxes[i] for i in kept]
        sizes = [_stored_size(p[0]) if b else (1, 1) for p, b in zip(readable, boxes, strict=True)]
        ground = ground_targets(
            captions, boxes, sizes, tokenizer, grounding.head_grid, texts.shape[1]
        )
    return TrainData(
        pixels=pixels,
        captions=captions,
        negatives=[list(p[2]) if len(p) > 2 else [] for p in readable],
        group_ids=group_ids,
        texts=texts,
        caption_ids=torch.tensor([vocab[c] for c in captions], device=device),
        groups=torch.tensor(group_ids, device=device),
        skipped=skipped,
        ground=ground,
    )


def _stored_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file as stored (its header only), which boxes refer to."""
    with Image.open(path) as image:
        return image.size


def load_pixels(
    paths: Sequence[str | os.PathLike[str]], size: int
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode images to model input, uint8 [N, 3, size, size]; unreadable ones are skipped.

    Returns (pixels, indices of the paths kept, "path: reason" for each skipped one).
    """
    kept, arrays, skipped = [], [], []
    for i, name in enumerate(paths):
        path = Path(name)
        try:
            arrays.append(decode(path.read_bytes(), path.suffix.lower().lstrip("."), size).pixels)
            kept.append(i)
        except (OSError, UnreadableImage) as e:
            skipped.append(f"{path}: {e}")
    if not arrays:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), kept, skipped
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), kept, skipped


def tokenize(tokenizer: Any, texts: Sequence[str], device: str) -> torch.Tensor:
    """Token ids [len(texts), context] of `texts`, on `device`."""
    return tokenizer(list(texts)).to(device)


def split_held_out(
    group_ids: list[int], fraction: float, seed: int
) -> tuple[list[list[int]], list[int]]:
    """Train groups (lists of pair indices) and the held-out pair indices, by whole groups."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    groups = list(members.values())
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(groups))
    budget = min(1000, int(len(group_ids) * fraction))
    held: list[int] = []
    train: list[list[int]] = []
    for g in order:
        if len(held) + len(groups[g]) <= budget:
            held.extend(groups[g])
        else:
            train.append(groups[g])
    return train, sorted(held)


def batches(groups: list[list[int]], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled fixed-size batches that keep each group's members together."""
    order = [i for g in rng.permutation(len(groups)) for i in groups[g]]
    return [
        np.array(order[s : s + batch_size])
        for s in range(0, len(order) - batch_size + 1, batch_size)
    ] or [np.array(order)]


def pick_edits(
    index: np.ndarray, negatives: list[list[str]], captions: list[str], rng: np.random.Generator
) -> tuple[list[str], list[bool]]:
    """One of each pair's own negative captions (its caption, flagged off, when it has none)."""
    texts, flags = [], []
    for i in index:
        own = negatives[i]
        if own:
            texts.append(own[int(rng.integers(len(own)))])
        else:
            texts.append(captions[i])
        flags.append(bool(own))
    return texts, flags
