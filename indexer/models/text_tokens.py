"""Where a CLIP token row's text ends, read the same way by training (torch) and queries (numpy).

A row is the start token, the text's tokens, the end token — the largest id in the vocabulary,
so ``argmax`` finds it — then padding (id 0). Importing this module does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Ids = TypeVar("Ids", np.ndarray, "torch.Tensor")


def trim_padding(ids: Ids) -> Ids:
    """Token ids [B, C] cut after the longest row's end token, to [B, L ≤ C]."""
    if not len(ids):
        return ids
    return ids[:, : int(ids.argmax(-1).max()) + 1]


def real_tokens(ids: Ids) -> Ids:
    """The mask [B, L] of token ids [B, L]: True up to and including each row's end token."""
    end = ids.argmax(-1)[:, None]
    if isinstance(ids, np.ndarray):
        return np.arange(ids.shape[1])[None, :] <= end
    import torch

    return torch.arange(ids.shape[1], device=ids.device)[None, :] <= end
