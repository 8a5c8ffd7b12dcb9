"""Fingerprints are recorded on disk, so their values are pinned: a change here would make
existing indexes refuse their model, heads refuse their encoder, and caches miss."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from indexer.errors import WeightsUnavailable
from indexer.models.fingerprints import (
    cache_key,
    checkpoint_fingerprint,
    sampled_fingerprint,
    weights_fingerprint,
)


def test_sampled_fingerprints_keep_their_values(tmp_path):
    """The scheme earlier versions recorded as a checkpoint's identity: indexes still hold it."""
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"photoseek")
    big.write_bytes(bytes(range(256)) * ((9 << 20) // 256))  # past 8 MiB: both ends hashed
    assert sampled_fingerprint(small) == "file:5bfdff5b8e86561ccb30e68a"
    assert sampled_fingerprint(big) == "file:9979550928faa9636bc8facf"
    with pytest.raises(WeightsUnavailable):
        sampled_fingerprint(tmp_path / "missing.pt")


def test_checkpoint_fingerprint_is_the_sha256_of_every_byte(tmp_path):
    """Two checkpoints that differ only between their first and last 4 MiB (a fine-tune of
    the middle layers) are different models; the value is what `sha256sum` prints."""
    data = bytearray(bytes(range(256)) * ((12 << 20) // 256))
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(data)
    data[6 << 20] ^= 0xFF
    b.write_bytes(data)
    assert checkpoint_fingerprint(a) == "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    assert checkpoint_fingerprint(a) != checkpoint_fingerprint(b)
    assert sampled_fingerprint(a) == sampled_fingerprint(b)  # what the old scheme could not see
    with pytest.raises(WeightsUnavailable, match="missing.pt"):
        checkpoint_fingerprint(tmp_path / "missing.pt")


def test_checkpoint_fingerprint_is_computed_once_per_file_version(tmp_path):
    """The whole-file hash is cached by path, size, mtime and inode: a file rewritten in place
    with its mtime put back is (knowingly) not re-read; a touched or replaced one is."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"a" * 4096)
    first = checkpoint_fingerprint(path)
    stat = path.stat()
    with path.open("r+b") as f:
        f.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint_fingerprint(path) == first  # from the cache: the bytes were not read
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = checkpoint_fingerprint(path)
    assert touched == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() != first
    replacement = tmp_path / "new.pt"
    replacement.write_bytes(b"c" * 4096)
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    os.replace(replacement, path)  # same path, size and mtime; another inode
    assert checkpoint_fingerprint(path) == "sha256:" + hashlib.sha256(b"c" * 4096).hexdigest()


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
