"""Fingerprints: short BLAKE2b hex digests naming a model's weights, a checkpoint or a cache entry.

Every value here is recorded somewhere — an index's model identity, a head's
``encoder_fingerprint``, the names of cached exports — so each must stay exactly as computed
when it was written: the digest sizes differ on purpose, and changing any of them would make
existing indexes refuse their model (or miss their caches). Importing this module does not
import torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.errors import WeightsUnavailable

if TYPE_CHECKING:
    from torch import nn

_KEY_BYTES = 12  # cache keys and checkpoint fingerprints
_WEIGHTS_BYTES = 16  # in-memory weights, which a head records
_CHECKPOINT_SPAN = 4 << 20  # bytes hashed at each end of a checkpoint


def _digest(digest_size: int, first: bytes = b"") -> hashlib.blake2b:
    return hashlib.blake2b(first, digest_size=digest_size)


def cache_key(*parts: object) -> str:
    """A key naming a cache entry by the parts it depends on (joined by NUL)."""
    return _digest(_KEY_BYTES, "\0".join(map(str, parts)).encode()).hexdigest()


def checkpoint_fingerprint(path: Path) -> str:
    """A content fingerprint of a checkpoint file, cheap on gigabytes: its size and its first
    and last `_CHECKPOINT_SPAN` bytes (the last only beyond twice the span), hashed."""
    try:
        size = path.stat().st_size
        digest = _digest(_KEY_BYTES, str(size).encode())
        with path.open("rb") as f:
            digest.update(f.read(_CHECKPOINT_SPAN))
            if size > 2 * _CHECKPOINT_SPAN:
                f.seek(-_CHECKPOINT_SPAN, os.SEEK_END)
                digest.update(f.read())
    except OSError as e:
        raise WeightsUnavailable(f"checkpoint {path}: {e.strerror or e}") from None
    return "file:" + digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of every tensor of `model` (by name, as float32), whatever device or dtype."""
    digest = _digest(_WEIGHTS_BYTES)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
