"""CLIP's text tower over only the tokens a batch uses, returning its per-token features too.

Under the causal mask a token's features depend only on the tokens before it, so the padding
after the longest text's end token changes nothing but the cost: a short query runs ~8
positions instead of 77. The ONNX export and ITM training run this one forward, so the head
trains on exactly the token features a query later feeds it, and every size is read from the
input, so the exported graph takes any length.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import torch
from torch import nn

from indexer.models.attention import self_attention

# An open_clip CLIP or CustomTextCLIP; open_clip ships no type hints to say more.
OpenClipModel: TypeAlias = Any


def trimmable(model: OpenClipModel) -> bool:
    """Whether `model` is open_clip's built-in CLIP text tower: causal, argmax-pooled, plain
    batch-first residual blocks (the structure `trimmed_text_forward` runs)."""
    # Imported here: open_clip takes over a second to import, which the head's users that
    # never ask need not pay.
    import open_clip
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(model, open_clip.CLIP):
        return False
    blocks = getattr(model.transformer, "resblocks", [])
    return (
        getattr(model, "text_pool_type", "argmax") == "argmax"
        and getattr(model, "attn_mask", None) is not None
        and getattr(model.transformer, "batch_first", False)
        and all(
            type(b) is ResidualAttentionBlock
            and isinstance(b.attn, nn.MultiheadAttention)
            and b.attn.batch_first
            and b.attn._qkv_same_embed_dim
            and not hasattr(b, "ln_1_kv")
            for b in blocks
        )
    )


def trimmed_text_forward(
    model: OpenClipModel, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITC embeddings [B, E] (unnormalised) and token features [B, L, width] of token ids
    [B, L ≤ context length], for a CLIP model whose text tower is `trimmable`."""
    length = ids.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(ids).to(cast) + model.positional_embedding[:length].to(cast)
    mask = model.attn_mask[:length, :length].to(x.dtype)
    for block in model.transformer.resblocks:
        x = x + block.ls_1(self_attention(block.attn, block.ln_1(x), mask))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    features = model.ln_final(x)
    pooled = features[torch.arange(features.shape[0]), ids.argmax(dim=-1)]
    projection = model.text_projection
    if isinstance(projection, nn.Linear):
        pooled = projection(pooled)
    elif projection is not None:
        pooled = pooled @ projection
    return pooled, features
