"""Resolve a `--reranker` checkpoint (`hf:ORG/NAME` or a `save_pretrained` folder) and load it.

The class comes from the checkpoint's `model_type` through `BACKENDS`, as transformers' Auto
classes pick theirs. transformers (and torch) are imported only here and in the backends, so
the plain query path and `--reranker head` never pay for them.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import BadModelSpec, WeightsUnavailable
from indexer.models.hf_checkpoint import download, fingerprint
from indexer.models.hf_checkpoint import require_transformers as _require

log = logging.getLogger(__name__)

# model_type -> (module in search.rerank, class name); the backend loads its transformers class
BACKENDS: dict[str, tuple[str, str]] = {
    "blip": ("blip", "BlipScorer"),
    "vilt": ("vilt", "ViltScorer"),
    "bridgetower": ("bridgetower", "BridgeTowerScorer"),
    "flava": ("flava", "FlavaScorer"),
}


@dataclass(frozen=True)
class Checkpoint:
    """A reranker checkpoint on disk: its folder, model_type and content fingerprint."""

    spec: str
    folder: Path
    model_type: str
    fingerprint: str


def require_transformers() -> None:
    """Raise one line naming the extra when transformers is not installed."""
    _require("pretrained rerankers")


def resolve(spec: str) -> Checkpoint:
    """The checkpoint `spec` names: `hf:ORG/NAME` (from the Hugging Face cache, downloaded
    when online) or a local folder written by `save_pretrained`."""
    require_transformers()
    hub = spec.startswith("hf:")
    folder = download(spec[3:], "--reranker") if hub else Path(spec).expanduser()
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
