"""BLIP's ITM text side over given image states, its cross-attention computed the short way.

transformers' BLIP projects every image token (577 at 384 px) to keys and values in each of
the 12 text layers, for every pair: 2 x 577 x 768^2 multiply-adds a layer, two thirds of what a
pair costs once the image side is cached. Per head h the same attention follows from the text
side: q . (W_k x + b_k) = (W_k^T q) . x + q . b_k, and q . b_k is one number for all image
tokens of a query row, so the softmax cancels it; each row of the attention sums to 1 (no
image token is masked), so sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v. The text's
few queries are thus carried into the image's space instead of its many tokens into the
heads': 2 x T x 768^2 + 2 x heads x T x 577 x 768 multiply-adds a layer for T text tokens, 0.45
of the cross-attention's work at T = 36. Same result up to rounding order (tests hold it to
the transformers forward); the text's own layers run as transformers' modules.
"""

from __future__ import annotations

from typing import Any


def itm_logits(model: Any, input_ids: Any, states: Any) -> Any:
    """Match log-odds [n] of one text (`input_ids` [1, T], unpadded) against n images given by
    the vision model's output `states` [n, tokens, width] of a `BlipForImageTextRetrieval`."""
    encoder = model.text_encoder
    n = states.shape[0]
    # No text mask: a single text is never padded, so transformers' mask is all ones.
    hidden = encoder.embeddings(input_ids=input_ids)
    for depth, layer in enumerate(encoder.encoder.layer):
        attended, _ = layer.attention(hidden)  # layer 0 sees the text alone: run it once
        if depth == 0:
            attended = attended.expand(n, -1, -1)
        hidden = layer.feed_forward_chunk(cross_attention(layer.crossattention, attended, states))
    two_way = model.itm_head(hidden[:, 0, :])
    return two_way[:, 1] - two_way[:, 0]


def cross_attention(block: Any, hidden: Any, states: Any) -> Any:
    """`block` (a `BlipTextAttention` over image states) on text `hidden` [n, T, d], the
    image projections folded into the queries (see the module's docstring)."""
    import torch

    attention = block.self
    n, t, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    width = states.shape[-1]
    query = attention.query(hidden) * size**-0.5  # the 1/sqrt(size) of the scores, on fewer rows
    query = query.reshape(n * t, heads, size).transpose(0, 1)  # [heads, n*T, size]
    folded = torch.bmm(query, attention.key.weight.view(heads, size, width))
    # [n, heads*T, width]: each image's queries in one matrix, against its own tokens
    folded = folded.view(heads, n, t, width).transpose(0, 1).reshape(n, heads * t, width)
    probs = torch.bmm(folded, states.transpose(1, 2)).softmax(dim=-1)
    mixed = torch.bmm(probs, states)  # [n, heads*T, width]
    mixed = mixed.view(n, heads, t, width).transpose(0, 1).reshape(heads, n * t, width)
    context = torch.bmm(mixed, attention.value.weight.view(heads, size, width).transpose(1, 2))
    context = context.transpose(0, 1).reshape(n, t, heads * size) + attention.value.bias
    return block.output(context, hidden)
