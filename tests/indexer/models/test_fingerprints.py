"""Fingerprints are recorded on disk, so their values are pinned: a change here would make
existing indexes refuse their model, heads refuse their encoder, and caches miss."""

from __future__ import annotations

import pytest
import torch

from indexer.errors import WeightsUnavailable
from indexer.models.fingerprints import cache_key, checkpoint_fingerprint, weights_fingerprint


def test_checkpoint_fingerprints_keep_their_values(tmp_path):
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"photoseek")
    big.write_bytes(bytes(range(256)) * ((9 << 20) // 256))  # past 8 MiB: both ends hashed
    assert checkpoint_fingerprint(small) == "file:5bfdff5b8e86561ccb30e68a"
    assert checkpoint_fingerprint(big) == "file:9979550928faa9636bc8facf"
    with pytest.raises(WeightsUnavailable):
        checkpoint_fingerprint(tmp_path / "missing.pt")


def test_weights_fingerprint_keeps_its_value_in_any_dtype():
    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.arange(6.0).view(2, 3))
        linear.bias.copy_(torch.tensor([-1.0, 0.5]))
    assert weights_fingerprint(linear) == "f4485d91baf892e870e0cd24956673bc"
    assert weights_fingerprint(linear.to(torch.bfloat16)) == "f4485d91baf892e870e0cd24956673bc"


def test_cache_keys_keep_their_values():
    # The towers cache (format version 4) and the cast image-tower cache.
    assert cache_key(4, "ViT-B-32", "laion2b_s34b_b79k") == "eb3c52c9b005eeddccc22085"
    assert cache_key("ViT-B-32", "laion2b_s34b_b79k", torch.bfloat16) == "01b3190d83f31dadabb9e690"
