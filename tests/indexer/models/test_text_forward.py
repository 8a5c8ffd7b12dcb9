"""The hand-written attention and trimmed text forward compute what open_clip's modules do."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from indexer.locations import data_dir
from indexer.models.attention import self_attention
from indexer.models.text_forward import trimmable, trimmed_text_forward
from indexer.models.text_tokens import real_tokens, trim_padding


@pytest.fixture(scope="module")
def tiny_clip() -> torch.nn.Module:
    open_clip.add_model_config(data_dir() / "model_configs" / "photoseek-tiny.json")
    torch.manual_seed(0)
    return open_clip.create_model("photoseek-tiny", pretrained=None).eval()


def test_token_helpers_agree_in_numpy_and_torch():
    ids = np.array([[49406, 320, 49407, 0, 0, 0], [49406, 320, 321, 322, 49407, 0]])
    assert trim_padding(ids).shape == (2, 5)
    assert trim_padding(torch.from_numpy(ids)).shape == (2, 5)
    mask = real_tokens(trim_padding(ids))
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert real_tokens(trim_padding(torch.from_numpy(ids))).tolist() == mask.tolist()
    assert trim_padding(np.zeros((0, 6), dtype=np.int64)).shape == (0, 6)


def test_self_attention_matches_multihead_attention():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(3, 5, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    with torch.no_grad():
        want = attn(x, x, x, attn_mask=causal, need_weights=False)[0]
        torch.testing.assert_close(self_attention(attn, x, causal), want)
        want = attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
        got = self_attention(attn, x, ~pad[:, None, None, :])
        torch.testing.assert_close(got, want)


def test_trimmed_forward_matches_encode_text(tiny_clip):
    assert trimmable(tiny_clip)
    ids = open_clip.get_tokenizer("photoseek-tiny")(["a dog", "a red circle left of a square"])
    with torch.no_grad():
        want = tiny_clip.encode_text(ids)
        pooled, features = trimmed_text_forward(tiny_clip, trim_padding(ids))
        full, _ = trimmed_text_forward(tiny_clip, ids)
    assert features.shape[:2] == trim_padding(ids).shape
    torch.testing.assert_close(pooled, want)
    torch.testing.assert_close(full, want)
