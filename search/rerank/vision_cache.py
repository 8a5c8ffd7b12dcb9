"""A bounded on-disk cache of a reranker's image-side output, one file per image.

Keyed by (reranker fingerprint, image content hash): a retrained checkpoint or an edited photo
never reads a stale entry. Least recently used entries go first once the folder passes its
byte limit (reads refresh an entry's mtime). Files are written whole, then renamed, so a killed
process leaves no torn entry.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

DEFAULT_MAX_BYTES = 4 << 30
MAX_BYTES_ENV = "PHOTOSEEK_RERANK_CACHE_BYTES"


def max_bytes_from_env() -> int:
    """The byte limit: $PHOTOSEEK_RERANK_CACHE_BYTES, else 4 GiB."""
    value = os.environ.get(MAX_BYTES_ENV, "").strip()
    return int(value) if value.isdigit() else DEFAULT_MAX_BYTES


class VisionCache:
    """The cached image-side outputs of one reranker, under `folder`."""

    def __init__(self, folder: Path, max_bytes: int | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes_from_env() if max_bytes is None else max_bytes
        self._sizes: dict[Path, int] | None = None  # scanned on the first write

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            array = np.load(path, allow_pickle=False)
            os.utime(path)  # recently used: evicted last
        except (OSError, ValueError):
            return None
        return array

    def put(self, key: str, array: np.ndarray) -> int:
        """Store one entry; returns its size in bytes."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
        sizes = self._scan()
        sizes[path] = len(buffer.getvalue())
        self._evict(sizes, keep=path)
        return sizes.get(path, 0)

    def entry_bytes(self, key: str) -> int:
        """The size of one stored entry (0 when absent)."""
        return self._scan().get(self._path(key), 0)

    def bytes_used(self) -> int:
        return sum(self._scan().values())

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _scan(self) -> dict[Path, int]:
        if self._sizes is None:
            self._sizes = {p: p.stat().st_size for p in self.folder.glob("*/*.npy")}
        return self._sizes

    def _evict(self, sizes: dict[Path, int], keep: Path) -> None:
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        by_age = sorted(sizes, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
        for path in by_age:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= sizes.pop(path)
