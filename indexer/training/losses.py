"""The training losses: CLIP's contrastive ITC, ITM on sampled negatives, twin listwise, and
box grounding of the head's cross-attention (`grounding`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from indexer.models.itm_head import ItmHead, image_features_and_tokens, text_features_and_tokens
from indexer.training.grounding import GROUND_LAYER, grounding_loss
from indexer.training.options import TrainOptions
from indexer.training.trained import ClipModel


@dataclass(frozen=True)
class Batch:
    """One training batch of b pairs, on the device."""

    images: torch.Tensor  # standardised pixels [b, 3, S, S]
    texts: torch.Tensor  # token ids of each pair's caption [b, T]
    caption_ids: torch.Tensor  # [b]; equal ids: identical captions, never each other's negative
    edits: torch.Tensor  # token ids of one negative caption per pair [b, T]
    has_edit: torch.Tensor  # bool [b]: whether a pair's edit is a real negative
    group_ids: torch.Tensor | None = None  # [b]; needed for the listwise twin term
    # `GroundTargets.select` of the pairs, on the device; needed for the grounding term
    ground: tuple[torch.Tensor, torch.Tensor] | None = None


def step_loss(
    model: ClipModel,
    head: ItmHead,
    batch: Batch,
    generator: torch.Generator,
    options: TrainOptions,
) -> tuple[torch.Tensor, float, float]:
    """ITC + ITM loss for one batch, and its ITC and ITM parts as numbers (the ITM part with
    the grounding term, when `options.ground_weight` asks for it)."""
    b = batch.images.shape[0]
    itm_on = options.itm_weight != 0  # off: a plain dual encoder (CLIP), the head left as it is
    image_emb, patches = image_features_and_tokens(model, batch.images)
    text_emb, text_tokens, text_mask = text_features_and_tokens(
        model, torch.cat([batch.texts, batch.edits]) if itm_on else batch.texts
    )
    image_n = F.normalize(image_emb.float(), dim=-1)
    text_n = F.normalize(text_emb[:b].float(), dim=-1)
    scale = model.logit_scale.exp()
    eye = torch.eye(b, dtype=torch.bool, device=batch.images.device)
    same = batch.caption_ids[:, None] == batch.caption_ids[None, :]
    ids = batch.group_ids
    same_group = eye if ids is None else ids[:, None] == ids[None, :]
    # Identical captions are never negatives; group mates only when asked.
    exclude = (same | (same_group & (not options.itc_group_negatives))) & ~eye
    itc = itc_loss(scale * image_n @ text_n.T, exclude)
    if not itm_on:
        return itc, float(itc.detach()), 0.0

    share = options.itm_tower_grad
    text_tokens = _scale_grad(text_tokens, share)
    stored = head.compact_image_tokens(_scale_grad(patches, share), _scale_grad(image_emb, share))
    with torch.no_grad():
        sim = scale * image_n @ text_n.T
    mates = None
    if options.twin_listwise > 0 and ids is not None:
        mates = (same_group & ~eye).nonzero(as_tuple=True)
    text_index, image_index = _itm_pairs(sim, same, batch.has_edit, mates, generator)
    grounded = options.ground_weight > 0 and batch.ground is not None
    recorded: list[torch.Tensor] = []
    with head.attention_tap(GROUND_LAYER, _recorder(recorded)) if grounded else nullcontext():
        all_logits = head(
            text_tokens.index_select(0, text_index), text_mask[text_index], stored, image_index
        )
    labelled = len(all_logits) - (len(mates[0]) if mates is not None else 0)
    itm = _balanced_bce(all_logits[:labelled], b)
    if mates is not None:
        rows = torch.arange(b, device=all_logits.device)
        grid = all_logits.new_zeros(b, b)
        grid = grid.index_put((rows, rows), all_logits[:b])
        grid = grid.index_put(mates, all_logits[labelled:])
        itm = itm + options.twin_listwise * twin_listwise(grid, same_group, same)
    if grounded and batch.ground is not None:
        # The first b scored pairs are the positives: caption i on its own image i.
        tokens, cells = batch.ground
        ground = grounding_loss(recorded[0][:b], tokens[:, :, : text_tokens.shape[1]], cells)
        itm = itm + options.ground_weight * ground
    return itc + options.itm_weight * itm, float(itc.detach()), float(itm.detach())


def _recorder(recorded: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """An attention tap that keeps the probabilities it sees, unchanged."""

    def record(probabilities: torch.Tensor) -> torch.Tensor:
        recorded.append(probabilities)
        return probabilities

    return record


def itc_loss(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over image x text `logits`, with the `exclude`d
    (off-diagonal) pairs left out of both softmaxes."""
    logits = logits.float().masked_fill(exclude, -math.inf)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def _itm_pairs(
    sim: torch.Tensor,
    same: torch.Tensor,
    has_edit: torch.Tensor,
    mates: tuple[torch.Tensor, ...] | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(text, image) indices of the pairs the head scores: the b positives, then the labelled
    negatives, then the group `mates` (unlabelled, for the listwise term).

    Text indices past b are the edits (negative captions) of the pairs they were drawn for.
    """
    neg_text = sample_negatives(sim, same, generator)  # per image
    neg_image = sample_negatives(sim.T, same, generator)  # per text
    # Uniform negatives too: once ITC knows the words, its hardest negatives are twins
    # only composition separates, and a head from scratch learns nothing from those alone.
    flat = torch.zeros_like(sim)
    any_text = sample_negatives(flat, same, generator)
    any_image = sample_negatives(flat, same, generator)
    b = len(sim)
    rows = torch.arange(b, device=sim.device)
    edit_rows = rows[has_edit]
    text_index = torch.cat([rows, neg_text, rows, any_text, rows, b + edit_rows])
    image_index = torch.cat([rows, rows, neg_image, rows, any_image, edit_rows])
    if mates is None:
        return text_index, image_index
    return torch.cat([text_index, mates[0]]), torch.cat([image_index, mates[1]])


def sample_negatives(
    sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """For each row, one column drawn with probability softmax(sim), never a `same` column."""
    weights = torch.softmax(sim.float().masked_fill(same, -math.inf), dim=1)
    # A row with nothing but identical captions falls back to any other column.
    empty = ~torch.isfinite(weights).all(dim=1) | (weights.sum(dim=1) == 0)
    weights[empty] = (~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device))[empty].float()
    return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(sim.device)


def _balanced_bce(logits: torch.Tensor, positives: int) -> torch.Tensor:
    """Binary cross-entropy of ITM `logits` whose first `positives` are the matching pairs."""
    n = len(logits)
    labels = torch.zeros(n, device=logits.device)
    labels[:positives] = 1.0
    # Positives are a sixth of the pairs at most; weighting them up keeps the logit centred.
    weight = torch.where(labels > 0, (n - positives) / positives, 1.0)
    itm = F.binary_cross_entropy_with_logits(logits.float(), labels, weight=weight)
    return itm * n / weight.sum()


def _scale_grad(x: torch.Tensor, share: float) -> torch.Tensor:
    """`x` in the forward pass; only `share` of the gradient flows back through it."""
    if share == 1.0:
        return x
    return x.detach() if share == 0.0 else x * share + x.detach() * (1.0 - share)


def twin_listwise(
    logits: torch.Tensor, same_group: torch.Tensor, same_caption: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy of each caption over its group's images and back.

    `logits` [b, b] holds ITM logits of (caption i, image j) wherever `same_group`; a pair's
    own image is the target, and other images with an identical caption are left out.
    """
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    keep = same_group & (eye | ~same_caption)
    masked = logits.float().masked_fill(~keep, -math.inf)
    rows = keep.sum(dim=1) > 1  # a lone pair has nothing to be ranked against
    if not rows.any():
        return logits.sum() * 0.0
    target = torch.arange(len(logits), device=logits.device)[rows]
    t2i = F.cross_entropy(masked[rows], target)
    i2t = F.cross_entropy(masked.T[rows], target)
    return (t2i + i2t) / 2
