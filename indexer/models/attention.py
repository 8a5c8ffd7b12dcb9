"""Multi-head attention written out from its projections, for graphs that export at any length.

``nn.MultiheadAttention``'s own forward reshapes with the example's sizes, which the ONNX
tracer records as constants; these read every size from the input instead. The core is
``F.scaled_dot_product_attention``, which exports at opset 17 and honours
``torch.nn.attention.sdpa_kernel`` (training on CPU picks the plain math kernel with it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of batch-first queries [B, T, W] over keys and values [B, S, W], split into
    `heads`; `mask` is SDPA's (broadcast to [B, heads, T, S]: True or 0 where allowed)."""
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


def self_attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """What `attn` (batch-first, one packed input projection) computes over `x` [B, T, W]."""
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return attn.out_proj(attend(q, k, v, attn.num_heads, mask))
