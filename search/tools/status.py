"""What an index holds: counts, roots, model, size on disk, and the files that failed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from indexer.store.catalog import ERROR
from indexer.store.index_dir import model_record, open_existing
from indexer.store.vector_store import VECTORS_FILE, VectorStore, read_record


@dataclass(frozen=True)
class FailedFile:
    """A file the indexer could not read or decode, and why."""

    path: bytes
    reason: str


def index_status(directory: Path) -> dict[str, object]:
    """The facts `photoseek status` reports, as a JSON-ready dict."""
    catalog = open_existing(directory)
    try:
        record = model_record(catalog)
        counts = catalog.counts()
        roots = [os.fsdecode(p) for p in catalog.root_paths()]
        token_rows, token_bytes = catalog.token_bytes()
        schema_version = catalog.schema_version()
        generation = catalog.generation()
        embedder = json.loads(catalog.get_meta("embedder") or "null")  # the last run's
    finally:
        catalog.close()
    vectors, index_type, vectors_generation, built = 0, None, None, None
    if (directory / VECTORS_FILE).exists() and record is not None:
        # Mapped, not read: a status of a 10M-image index should not load gigabytes.
        store = VectorStore.load(directory, record.dim, mmap=True)
        vectors, index_type = len(store), type(store.index).__name__
        vectors_generation = store.generation
        built = _vector_index(directory)
    return {
        "index": str(directory),
        "images": counts["images"],
        "errors": counts["errors"],
        "offline": counts["offline"],
        "vectors": vectors,
        "index_type": index_type,
        # How the index was chosen and tuned when it was last built (None: no record of it).
        "vector_index": built,
        "roots": roots,
        "model": (
            {**record.identity.to_dict(), "dim": record.dim, "image_size": record.image_size}
            if record
            else None
        ),
        "bytes": _size_on_disk(directory),
        "rerank_bytes_per_image": round(token_bytes / token_rows) if token_rows else 0,
        "embedder": embedder,
        "schema_version": schema_version,
        # The catalog's change counter, and the one the vector file reflects: they differ while
        # an indexer runs (or after one was killed); searches then scan the difference exactly.
        "generation": generation,
        "vectors_generation": vectors_generation,
    }


def _vector_index(directory: Path) -> dict[str, object] | None:
    """The factory string, trained size, search settings and build-time recall@10 (with its
    standard error over the held-out queries) recorded beside the vector file, when the record
    describes it."""
    size = (directory / VECTORS_FILE).stat().st_size
    record = read_record(directory, VECTORS_FILE, size)
    if not record:
        return None
    keys = ("factory", "trained_for", "nprobe", "ef_search", "refine", "recall", "recall_se")
    return {key: record.get(key) for key in keys}


def failed_files(directory: Path) -> list[FailedFile]:
    """Every file recorded with an error, and every indexed photo its captioner failed on
    (reason "captioning: …"), in path order."""
    catalog = open_existing(directory)
    try:
        rows = catalog.all_rows(status=ERROR)
        uncaptioned = catalog.caption_failures()
    finally:
        catalog.close()
    failed = [FailedFile(row.path, row.error or "unknown") for row in rows]
    failed += [FailedFile(path, f"captioning: {reason}") for path, reason in uncaptioned]
    return sorted(failed, key=lambda f: f.path)


def _size_on_disk(directory: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total
