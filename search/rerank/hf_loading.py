"""Resolve a `--reranker` checkpoint (`hf:ORG/NAME` or a `save_pretrained` folder) and load it.

The class comes from the checkpoint's `model_type` through `BACKENDS`, as transformers' Auto
classes pick theirs. transformers (and torch) are imported only here and in the backends, so
the plain query path and `--reranker head` never pay for them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import BadModelSpec, WeightsUnavailable

log = logging.getLogger(__name__)

EXTRA = "pip install 'photoseek[hf]'"
# model_type -> (module in search.rerank, class name); the backend loads its transformers class
BACKENDS: dict[str, tuple[str, str]] = {
    "blip": ("blip", "BlipScorer"),
    "vilt": ("vilt", "ViltScorer"),
    "bridgetower": ("bridgetower", "BridgeTowerScorer"),
    "flava": ("flava", "FlavaScorer"),
}
_WEIGHTS = ("*.safetensors", "*.bin")
_HASHED_EDGE = 1 << 20  # bytes read from each end of a weights file for the fingerprint


@dataclass(frozen=True)
class Checkpoint:
    """A reranker checkpoint on disk: its folder, model_type and content fingerprint."""

    spec: str
    folder: Path
    model_type: str
    fingerprint: str


def require_transformers() -> None:
    """Raise one line naming the extra when transformers is not installed."""
    try:
        importlib.import_module("transformers")
    except ImportError:
        raise BadModelSpec(f"pretrained rerankers need transformers: {EXTRA}") from None


def resolve(spec: str) -> Checkpoint:
    """The checkpoint `spec` names: `hf:ORG/NAME` (from the Hugging Face cache, downloaded
    when online) or a local folder written by `save_pretrained`."""
    require_transformers()
    folder = _download(spec[3:]) if spec.startswith("hf:") else Path(spec).expanduser()
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise BadModelSpec(
            f"--reranker {spec}: not a reranker (want `head`, `hf:ORG/NAME` or a folder "
            "written by save_pretrained, with a config.json)"
        )
    try:
        model_type = str(json.loads(config_file.read_text(encoding="utf-8"))["model_type"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadModelSpec(f"--reranker {spec}: config.json names no model_type") from None
    if model_type not in BACKENDS:
        raise BadModelSpec(
            f"--reranker {spec}: model_type {model_type!r} is not a reranker photoseek knows "
            f"(kinds: {', '.join(BACKENDS)})"
        )
    return Checkpoint(spec, folder, model_type, fingerprint(folder))


def load(checkpoint: Checkpoint) -> Any:
    """The backend scorer (`search.rerank.backend.PairScorer`) for a resolved checkpoint."""
    module, name = BACKENDS[checkpoint.model_type]
    backend = getattr(importlib.import_module(f"search.rerank.{module}"), name)
    try:
        return backend.from_folder(checkpoint.folder)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsUnavailable(f"--reranker {checkpoint.spec}: cannot load: {first}") from None


def fingerprint(folder: Path) -> str:
    """A content id of the checkpoint: its config and its weights' names, sizes and ends (the
    ends of a weights file change with any retraining; reading all of a 1 GB file would not
    pay)."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for pattern in _WEIGHTS:
        for path in sorted(folder.glob(pattern)):
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with open(path, "rb") as f:
                digest.update(f.read(_HASHED_EDGE))
                f.seek(max(0, size - _HASHED_EDGE))
                digest.update(f.read())
    return digest.hexdigest()[:16]


def _download(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
    except Exception as e:  # noqa: BLE001 - hub errors have many types; each means "not here"
        raise WeightsUnavailable(
            f"--reranker hf:{repo}: not in the Hugging Face cache and cannot be downloaded "
            f"({type(e).__name__})"
        ) from None
