"""Grad-CAM on BLIP's ITM cross-attention: where in the image each text token finds its match.

As ALBEF and BLIP explain their ITM heads (LAVIS' ``compute_gradcam``): run
`BlipForImageTextRetrieval`'s ITM path on one (image, text) pair with the cross-attention
probabilities A [heads, L, 1 + g*g] of one text-encoder layer recorded, take the gradient G of
the match log-odds (logit[match] - logit[no match], the `itm_logit` the reranker reports;
LAVIS differentiates logit[match] alone) with respect to them, and keep ``mean over heads of
max(G, 0) * A``. Row t is text position t's map over the vision tokens; the vision [CLS]
column has no place and is left out, and the patch columns, reshaped to the grid, are the map.

The layer is `DEFAULT_LAYER` (6 of BLIP-base's 12, 0-based: LAVIS' default ``block_num``),
or the last but one for a shallower text encoder: the ITM head reads only position 0 of the
last layer's output, so there every other row's gradient is zero.

This module imports torch (through the scorer); the plain query path never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from indexer.errors import BadInput
from search.rerank.backend import match_minus_no_match
from search.rerank.blip import BlipScorer

DEFAULT_LAYER = 6
FIRST_WORD_ROW = 1  # rows of the maps: the start token ([CLS] / [ENC]), then the words' tokens


@dataclass(frozen=True)
class BlipMaps:
    """Grad-CAM maps of one (image, text) pair, per text position."""

    maps: np.ndarray  # [L, g, g] float32: the start token, the words' tokens, the end token
    words: list[str]
    spans: list[range]  # each word's rows in `maps`
    itm_logit: float
    layer: int  # the text encoder layer the maps come from (0-based)


def layer_count(scorer: BlipScorer) -> int:
    """Layers of the scorer's text encoder (each has a cross-attention)."""
    return len(scorer.model.text_encoder.encoder.layer)


def default_layer(scorer: BlipScorer) -> int:
    """`DEFAULT_LAYER`, or the last layer but one where the encoder is shallower."""
    return max(0, min(DEFAULT_LAYER, layer_count(scorer) - 2))


def word_ids(tokenizer: Any, text: str) -> tuple[list[int], list[str], list[range]]:
    """The processor's ids of `text` (start, tokens, end), its words (split at white space) and
    each word's rows: a word's tokens are the ones it encodes to alone, since BERT's
    tokenizer splits at white space before anything else."""
    words = text.split()
    if not words:
        raise BadInput("explain needs some text")
    pieces = [list(tokenizer(word, add_special_tokens=False)["input_ids"]) for word in words]
    ids = list(tokenizer(text, truncation=True)["input_ids"])
    body = [token for piece in pieces for token in piece]
    if ids[FIRST_WORD_ROW:-1] != body:
        limit = getattr(tokenizer, "model_max_length", len(ids))
        raise BadInput(
            f"cannot split {text!r} into words the way the tokenizer reads it "
            f"(or it is longer than the model's {limit} tokens)"
        )
    spans, start = [], FIRST_WORD_ROW
    for piece in pieces:
        spans.append(range(start, start + len(piece)))
        start += len(piece)
    return ids, words, spans


def blip_maps(scorer: BlipScorer, image: Image.Image, text: str, layer: int | None) -> BlipMaps:
    """Grad-CAM maps of `text` over the upright RGB `image` at text-encoder `layer`
    (None: `default_layer`); the image goes through the model's own processor."""
    torch = scorer.torch
    model = scorer.model
    layers = layer_count(scorer)
    chosen = default_layer(scorer) if layer is None else layer
    if not -layers <= chosen < layers:
        raise BadInput(f"the BLIP text encoder has layers 0..{layers - 1}, not {chosen}")
    chosen %= layers
    ids, words, spans = word_ids(scorer.processor.tokenizer, text)
    pixels = scorer.processor(images=[image], return_tensors="pt")["pixel_values"]
    recorded: list[Any] = []

    def record(_module: Any, _inputs: Any, output: tuple[Any, Any]) -> None:
        recorded.append(output[1])  # (context, probabilities [1, heads, L, 1 + g*g])

    attention = model.text_encoder.encoder.layer[chosen].crossattention.self
    handle = attention.register_forward_hook(record)
    try:
        with torch.enable_grad():
            logit = match_minus_no_match(
                model(
                    input_ids=torch.tensor([ids], device=scorer.device),
                    pixel_values=pixels.to(scorer.device, model.dtype),
                    use_itm_head=True,
                ).itm_score
            )
            (grad,) = torch.autograd.grad(logit.sum(), recorded[0])
    finally:
        handle.remove()
    cam = (grad.clamp(min=0) * recorded[0]).mean(dim=1)[0, :, 1:]
    side = int(round((cam.shape[-1]) ** 0.5))
    if side * side != cam.shape[-1]:
        raise BadInput(f"BLIP's {cam.shape[-1]} image tokens do not form a square patch grid")
    maps = cam.reshape(-1, side, side).detach().float().cpu().numpy()
    return BlipMaps(maps, words, spans, float(logit.detach()[0]), chosen)
