"""Grad-CAM on the ITM head's cross-attention: where in the image each text token finds its match.

As ALBEF and BLIP explain their ITM heads: run the head on one (text, image) pair with the
cross-attention probabilities A [heads, 1 + T, P'] of one fusion layer recorded, take the
gradient G of the match logit with respect to them, and keep ``mean over heads of
max(G, 0) * A``: the attention that, if it grew, would raise the match. Row t of the result is
text position t's map over the stored image tokens; the patch columns, reshaped to the patch
grid, are the map (the image's global-embedding token, when the head stores one, has no place
and is left out).

`DEFAULT_LAYER` is the first fusion layer. In the last one only the [MATCH] row reaches the
logit (it is read from the [MATCH] position right after), so every text token's gradient there
is zero and per-word maps must come from an earlier layer; with photoseek's two-layer head that
is layer 0. ``bench/explain_bench.py --layer`` measures the choice.

This module imports torch; the plain query path never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from indexer.errors import BadInput
from indexer.models.itm_head import ItmHead, image_features_and_tokens, text_features_and_tokens
from indexer.models.loading import LoadedModel
from indexer.models.pixels import standardise

DEFAULT_LAYER = 0
FIRST_WORD_ROW = 2  # rows of the maps: [MATCH], the start token, then the text's tokens


@dataclass(frozen=True)
class TokenMaps:
    """Grad-CAM maps of one (text, image) pair."""

    maps: np.ndarray  # [1 + L, g, g] float32: the [MATCH] query, then each of the L text ids
    itm_logit: float
    layer: int  # the fusion layer the maps come from (0-based)


def cross_attention_gradcam(
    head: ItmHead,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    image_tokens: torch.Tensor,
    layer: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(match logits [N], Grad-CAM [N, 1 + T, P'] over the stored image tokens) at `layer`.

    The inputs are `ItmHead.forward`'s; each row's gradient is its own logit's, since rows do
    not interact.
    """
    recorded: list[torch.Tensor] = []

    def record(probabilities: torch.Tensor) -> torch.Tensor:
        recorded.append(probabilities)
        return probabilities

    dtype = head.image_in.weight.dtype
    with torch.enable_grad():
        # Detached and marked: the graph exists even when the head's weights are frozen.
        image = image_tokens.detach().to(dtype).requires_grad_()
        with head.attention_tap(layer, record):
            logits = head(text_tokens.detach().to(dtype), text_mask, image)
        (grad,) = torch.autograd.grad(logits.sum(), recorded[0])
    cam = (grad.clamp(min=0) * recorded[0]).mean(dim=1)
    return logits.detach(), cam.detach()


def token_maps(
    loaded: LoadedModel, pixels: np.ndarray, ids: torch.Tensor, layer: int = DEFAULT_LAYER
) -> TokenMaps:
    """Grad-CAM maps over the patch grid for model-input pixels [S, S, 3] uint8 and one
    tokenised text `ids` [1, L] (start, the text's tokens, end; no padding)."""
    head = loaded.head
    if head is None:
        raise BadInput(f"the model {loaded.identity.spec} has no ITM head to explain with")
    layers = len(head.blocks)
    if not -layers <= layer < layers:
        raise BadInput(f"the head has fusion layers 0..{layers - 1}, not {layer}")
    layer %= layers
    with torch.no_grad():
        x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).to(loaded.device)
        x = standardise(x.permute(2, 0, 1)[None], loaded.mean, loaded.std).to(loaded.dtype)
        features, patches = image_features_and_tokens(loaded.model, x)
        image = head.compact_image_tokens(patches, features)
        _, text, mask = text_features_and_tokens(loaded.model, ids.to(loaded.device))
    if text.shape[1] != ids.shape[1]:
        raise BadInput("the text tower returned another number of tokens than it was given")
    logits, cam = cross_attention_gradcam(head, text, mask, image, layer)
    config = head.config
    patch_columns = cam[0, :, 1:] if config.embed_dim else cam[0]
    side = config.grid // config.pool
    maps = patch_columns.reshape(-1, side, side).float().cpu().numpy()
    return TokenMaps(maps=maps, itm_logit=float(logits[0]), layer=layer)


def word_tokens(tokenizer: Any, text: str) -> tuple[torch.Tensor, list[str], list[range]]:
    """CLIP token ids [1, L] of `text` (start, tokens, end), its words (split at white space)
    and each word's rows in `TokenMaps.maps`: a word's BPE tokens are the ones it encodes to
    alone, since CLIP's tokenizer never merges across white space."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None or not hasattr(tokenizer, "sot_token_id"):
        raise BadInput(f"per-word maps need CLIP's BPE tokenizer, not {type(tokenizer).__name__}")
    words = text.split()
    if not words:
        raise BadInput("explain needs some text")
    pieces = [list(encode(word)) for word in words]
    body = [token for piece in pieces for token in piece]
    if body != list(encode(text)):
        raise BadInput(f"cannot split {text!r} into words the way the tokenizer reads it")
    limit = int(getattr(tokenizer, "context_length", 77))
    if len(body) + 2 > limit:
        raise BadInput(f"the text has {len(body)} tokens; the model reads at most {limit - 2}")
    spans, start = [], FIRST_WORD_ROW
    for piece in pieces:
        spans.append(range(start, start + len(piece)))
        start += len(piece)
    ids = torch.tensor([[tokenizer.sot_token_id, *body, tokenizer.eot_token_id]])
    return ids, words, spans
