"""Fingerprints: short BLAKE2b hex digests naming a model's weights, a checkpoint or a cache entry.

Every value here is recorded somewhere — an index's model identity, a head's
``encoder_fingerprint``, the names of cached exports — so each must stay exactly as computed
when it was written: the digest sizes differ on purpose, and changing any of them would make
existing indexes refuse their model (or miss their caches). Checkpoints were once named by a
sample of their bytes (`sampled_fingerprint`); indexes of that time still record it, so it is
kept for comparing with them. Importing this module does not import torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.atomic import write_text
from indexer.errors import WeightsUnavailable
from indexer.locations import cache_dir

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

_KEY_BYTES = 12  # cache keys and sampled checkpoint fingerprints
_WEIGHTS_BYTES = 16  # in-memory weights, which a head records
_CHECKPOINT_SPAN = 4 << 20  # bytes hashed at each end of a checkpoint by the sampled scheme
_SHA256 = "sha256:"  # checkpoint fingerprints: the file's SHA-256
SAMPLED_PREFIX = "file:"  # sampled fingerprints, recorded by versions before the SHA-256


def _digest(digest_size: int, first: bytes = b"") -> hashlib.blake2b:
    return hashlib.blake2b(first, digest_size=digest_size)


def cache_key(*parts: object) -> str:
    """A key naming a cache entry by the parts it depends on (joined by NUL)."""
    return _digest(_KEY_BYTES, "\0".join(map(str, parts)).encode()).hexdigest()


def checkpoint_fingerprint(path: Path) -> str:
    """The identity of a checkpoint file: the SHA-256 of all its bytes (what ``sha256sum``
    prints), read once per version of the file and then taken from the per-user cache, keyed
    by the file's path, size, mtime and inode."""
    try:
        stat = path.stat()
        resolved = path.resolve()
    except OSError as e:
        raise WeightsUnavailable(f"checkpoint {path}: {e.strerror or e}") from None
    entry = (
        cache_dir()
        / "fingerprints"
        / cache_key(resolved, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)
    )
    try:
        cached = entry.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        cached = ""
    if cached.startswith(_SHA256):
        return cached
    try:
        fingerprint = _SHA256 + file_sha256(path)
    except OSError as e:
        raise WeightsUnavailable(f"checkpoint {path}: {e.strerror or e}") from None
    try:
        write_text(entry, fingerprint + "\n")
    except OSError as e:  # a read-only cache costs the next run a re-read, nothing else
        log.info("could not cache the fingerprint of %s in %s: %s", path, entry, e)
    return fingerprint


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex (raises OSError)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sampled_fingerprint(path: Path) -> str:
    """The checkpoint fingerprint of earlier versions, which indexes they wrote still record:
    the file's size and its first and last `_CHECKPOINT_SPAN` bytes (the last only beyond
    twice the span), hashed. Blind to the bytes in between, so only for reading old records."""
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
    return SAMPLED_PREFIX + digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of every tensor of `model` (by name, as float32), whatever device or dtype."""
    digest = _digest(_WEIGHTS_BYTES)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
