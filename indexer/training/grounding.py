"""Box supervision for the ITM head's cross-attention: the words of an object look at its box.

Trained on matching alone, the head finds the objects of a scene but need not tie a word to its
object, so Grad-CAM's per-word maps (`photoseek explain`, which reads the cross-attention of
fusion layer `GROUND_LAYER`) land on either object. Where the data knows each named object's box
(the shapes world does; user photos do not), an auxiliary loss asks that the text tokens of each
object's phrase (``"red circle"``) put their attention, averaged over the heads, on the patches
inside that object's box:

    ground = mean over (pair, phrase, phrase token) of -log(attention mass on in-box patches)

on the matching pairs only (a caption's words have no box in an image it does not describe).
A patch is inside a box when its centre is, as the pointing game judges a map's peak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from indexer.errors import BadInput

GROUND_LAYER = 0  # the fusion layer `search.tools.gradcam.DEFAULT_LAYER` explains from
Box = Sequence[float]  # left, top, right, bottom in pixels of the image as stored


@dataclass(frozen=True)
class GroundTargets:
    """Per pair, up to `phrases` named objects: which caption tokens name each, and which
    stored image tokens lie in its box. A pair without boxes has all-False rows."""

    tokens: torch.Tensor  # bool [N, phrases, context]: token positions of the caption's ids
    cells: torch.Tensor  # bool [N, phrases, stored tokens]: columns of the cross-attention

    def select(self, index: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets of the pairs at `index`, tokens cut to the batch's `length`."""
        return self.tokens[index, :, :length], self.cells[index]


def phrase_positions(tokenizer: Any, caption: str, phrase: str) -> list[int]:
    """Positions in `tokenizer([caption])[0]` (start token at 0) of the tokens of `phrase`."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        raise BadInput(f"grounding needs a tokenizer with encode(), not {type(tokenizer).__name__}")
    body, piece = list(encode(caption)), list(encode(phrase))
    for start in range(len(body) - len(piece) + 1):
        if piece and body[start : start + len(piece)] == piece:
            return [1 + start + i for i in range(len(piece))]  # 1 +: the start token
    raise BadInput(f"a box is named {phrase!r}, which the caption {caption!r} does not contain")


def box_cells(box: Box, image_size: tuple[int, int], side: int) -> list[int]:
    """Row-major cells of a `side` x `side` patch grid whose centres fall inside `box`, for an
    image of `image_size` (width, height) that the model sees as its centre square (shortest
    side resized, then cropped); the cell under the box's centre when no centre falls inside."""
    width, height = image_size
    square = min(width, height)
    left, top = (width - square) / 2, (height - square) / 2
    x0, y0, x1, y1 = box
    step = square / side
    inside = [
        row * side + col
        for row in range(side)
        for col in range(side)
        if x0 <= left + (col + 0.5) * step <= x1 and y0 <= top + (row + 0.5) * step <= y1
    ]
    if inside:
        return inside
    col = min(side - 1, max(0, int(((x0 + x1) / 2 - left) / step)))
    row = min(side - 1, max(0, int(((y0 + y1) / 2 - top) / step)))
    return [row * side + col]


def ground_targets(
    captions: Sequence[str],
    boxes: Sequence[Mapping[str, Box]],
    sizes: Sequence[tuple[int, int]],
    tokenizer: Any,
    head_grid: tuple[int, int],
    context: int,
) -> GroundTargets:
    """Targets for every pair; `head_grid` is (patch grid side, stored tokens before the
    patches: 1 when the head stores the image's embedding first, else 0)."""
    side, first = head_grid
    phrases = max((len(b) for b in boxes), default=0)
    tokens = torch.zeros(len(captions), phrases, context, dtype=torch.bool)
    cells = torch.zeros(len(captions), phrases, first + side * side, dtype=torch.bool)
    for i, (caption, named, size) in enumerate(zip(captions, boxes, sizes, strict=True)):
        for j, (phrase, box) in enumerate(named.items()):
            positions = [p for p in phrase_positions(tokenizer, caption, phrase) if p < context]
            tokens[i, j, positions] = True
            cells[i, j, [first + c for c in box_cells(box, size, side)]] = True
    return GroundTargets(tokens, cells)


def in_box_mass(attention: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Attention mass (mean over heads) each text position puts on each phrase's box,
    [b, phrases, T]: `attention` [b, heads, 1 + T, P'] as `ItmHead.attention_tap` passes it
    (row 0 the [MATCH] query, then the T text positions), `cells` [b, phrases, P']."""
    mean = attention.float().mean(dim=1)[:, 1:]  # [b, T, P']
    return torch.einsum("btp,bjp->bjt", mean, cells.to(mean.dtype))


def grounding_loss(
    attention: torch.Tensor, tokens: torch.Tensor, cells: torch.Tensor
) -> torch.Tensor:
    """The module docstring's loss (0 when no token in the batch is named by a box);
    `tokens` [b, phrases, T] marks each phrase's own text positions."""
    if not tokens.any():
        return attention.sum() * 0.0
    mass = in_box_mass(attention, cells)
    return -torch.log(mass[tokens].clamp(min=1e-6)).mean()
