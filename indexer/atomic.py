"""Atomic file replacement: a crash leaves either the old file or the complete new one.

The protocol: write a temporary file beside the target, fsync it, rename it over the target,
then fsync the folder so the rename itself is durable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP_SUFFIX = ".tmp"


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` that replaces it only if the block succeeds.

    Write to the yielded path (any writer: a library that takes a file name is fine); on a
    clean exit it is flushed, renamed over `target` and the folder flushed; on an error it is
    removed and `target` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp, whose 0600 file would keep the umask from applying.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(target: Path) -> None:
    """Delete the temporary files that `replacing(target)` calls killed before their rename
    left beside `target` (as large as the file itself). Only for `target`'s one writer."""
    for leftover in target.parent.glob(f".{target.name}.*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> None:
    """Replace `target` with `data` atomically."""
    with replacing(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    """Replace `target` with `text` (UTF-8) atomically."""
    write_bytes(target, text.encode())


def fsync_file(path: Path) -> None:
    """Flush a file to disk, so a crash cannot leave it renamed into place but empty."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames into it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened for fsync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
