"""Multi-head attention written out from its projections, for graphs that export at any length.

``nn.MultiheadAttention``'s own forward reshapes with the example's sizes, which the ONNX
tracer records as constants; these read every size from the input instead. The core is
``F.scaled_dot_product_attention``, which exports at opset 17 and honours
``torch.nn.attention.sdpa_kernel`` (training on CPU picks the plain math kernel with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

# Sees the attention probabilities [B, heads, T, S] and returns those the values are mixed by.
ProbabilityTap: TypeAlias = Callable[[torch.Tensor], torch.Tensor]


def _split(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of batch-first queries [B, T, W] over keys and values [B, S, W], split into
    `heads`; `mask` is SDPA's (broadcast to [B, heads, T, S]: True or 0 where allowed)."""
    q, k, v = (_split(t, heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


def attend_tapped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, tap: ProbabilityTap
) -> torch.Tensor:
    """What `attend` computes without a mask, written out so that the probabilities pass
    through `tap`, which may record them (Grad-CAM differentiates the output with respect to
    them) or replace them; SDPA never materialises them, so this path is for explanations."""
    q, k, v = (_split(t, heads) for t in (q, k, v))
    probabilities = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
    return (tap(probabilities) @ v).transpose(1, 2).flatten(2)


def self_attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """What `attn` (batch-first, one packed input projection) computes over `x` [B, T, W]."""
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return attn.out_proj(attend(q, k, v, attn.num_heads, mask))
