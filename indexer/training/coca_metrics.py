"""How well a captioner describes shapes-world images: exact captions, each slot of the grammar
read back from the generated text, and a trained CoCa's caption loss on held-out pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from indexer.datasets.shapes_world import COLOURS, RELATIONS, SHAPES
from indexer.errors import BadInput

# The grammar ``a C S REL a C S`` position by position; "a" is the article, the rest slot names.
_TEMPLATE = ("a", "colour1", "shape1", "relation", "a", "colour2", "shape2")
_VOCABULARY = {
    "colour1": set(COLOURS),
    "colour2": set(COLOURS),
    "shape1": set(SHAPES),
    "shape2": set(SHAPES),
    "relation": set(RELATIONS),
}
SLOT_KINDS = {
    "colour": ("colour1", "colour2"),
    "shape": ("shape1", "shape2"),
    "relation": ("relation",),
}


def caption_slots(caption: str) -> dict[str, str | None]:
    """The five slots a caption fills, read position by position against the shapes-world
    grammar with its own vocabulary; a slot whose word is missing, out of its vocabulary, or
    shifted by a wrong article is None."""
    words = caption.split()
    tokens: list[str] = []
    while words:
        pair = " ".join(words[:2])
        tokens.append(pair if pair in RELATIONS else words[0])
        words = words[2:] if pair in RELATIONS else words[1:]
    slots: dict[str, str | None] = {name: None for name in _VOCABULARY}
    for position, name in enumerate(_TEMPLATE):
        if position >= len(tokens):
            break
        if name == "a":
            if tokens[position] != "a":
                break  # everything after a missing article is out of place
        elif tokens[position] in _VOCABULARY[name]:
            slots[name] = tokens[position]
    return slots


def caption_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """Percentages over the pairs: captions equal to the truth (spacing aside), and for each
    slot kind (colour, shape, relation) the share of its slots read back right."""
    if len(predicted) != len(truth) or not truth:
        raise BadInput(f"{len(predicted)} captions for {len(truth)} truths")
    exact = sum(" ".join(p.split()) == t for p, t in zip(predicted, truth, strict=True))
    scores = {"exact": 100.0 * exact / len(truth)}
    read = [(caption_slots(p), caption_slots(t)) for p, t in zip(predicted, truth, strict=True)]
    for kind, names in SLOT_KINDS.items():
        right = sum(got[n] == want[n] for got, want in read for n in names)
        scores[kind] = 100.0 * right / (len(names) * len(read))
    return scores


def held_out_caption_loss(
    folder: str | os.PathLike[str],
    pairs: Sequence[tuple[str | os.PathLike[str], str]],
    device: str = "cpu",
    batch_size: int = 64,
    mismatched: bool = False,
) -> float:
    """The mean next-token caption loss (nats per token, teacher forced) of the CoCa saved in
    `folder` on (image path, caption) pairs. `mismatched`: each caption is scored against the
    image half the list away instead (another group's); a decoder that reads the picture
    scores its own pairs far better than these, one that learnt only the grammar the same."""
    import open_clip
    import torch

    from indexer.models.pixels import standardise
    from indexer.training.coca_train import caption_loss
    from indexer.training.data import load_pixels, tokenize

    source = f"local-dir:{Path(folder).resolve()}"
    coca = open_clip.create_model(source).to(device).eval()
    tokenizer = open_clip.get_tokenizer(source)
    cfg = coca.visual.preprocess_cfg
    pixels, kept, _ = load_pixels([p for p, _ in pairs], coca.visual.image_size[0])
    texts = tokenize(tokenizer, [pairs[i][1] for i in kept], device)
    if mismatched:
        pixels = pixels.roll(len(kept) // 2, dims=0)
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(kept), batch_size):
            images = standardise(
                pixels[start : start + batch_size].to(device), cfg["mean"], cfg["std"]
            )
            out = coca(images, texts[start : start + batch_size])
            count = int((out["labels"] != coca.pad_id).sum())
            total += float(caption_loss(out, coca.pad_id)) * count
            tokens += count
    return total / max(tokens, 1)
