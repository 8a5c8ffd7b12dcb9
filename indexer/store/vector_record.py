"""The small JSON record beside a vector file: which catalog generation the file reflects, its
size (a record that names another size is about another file), and how it was built and tuned."""

from __future__ import annotations

import json
from pathlib import Path


def record_path(directory: Path, filename: str) -> Path:
    """The record beside a vector file: `vectors.faiss` -> `vectors.json`."""
    return directory / Path(filename).with_suffix(".json").name


def read_record(directory: Path, filename: str, size: int) -> dict[str, object]:
    """The record of a vector file of `size` bytes; empty when missing or not about this file."""
    try:
        record = json.loads(record_path(directory, filename).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("bytes") != size:
        return {}
    return record
