"""A transformers checkpoint on disk: the `hf` extra, a hub repository's cached snapshot, and
a content fingerprint of a `save_pretrained` folder. Shared by the captioners
(`indexer.captioning`) and search's rerankers (`search.rerank.hf_loading`), which resolve their
checkpoints the same way."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from indexer.errors import BadModelSpec, WeightsUnavailable
from indexer.models.fingerprints import checkpoint_fingerprint
from indexer.models.hub_cache import hub_offline

EXTRA = "pip install 'photoseek[hf]'"
_WEIGHTS = ("*.safetensors", "*.bin")


def require_transformers(what: str) -> None:
    """Raise one line naming the extra when transformers is not installed (`what`: the
    things that need it, e.g. "pretrained rerankers")."""
    try:
        importlib.import_module("transformers")
    except ImportError:
        raise BadModelSpec(f"{what} need transformers: {EXTRA}") from None


def download(repo: str, option: str) -> Path:
    """The snapshot folder of hub repository `repo`: from the cache when it is there (no
    connection then), else downloaded unless HF_HUB_OFFLINE; WeightsUnavailable naming
    `option` when neither can be."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except Exception as e:  # noqa: BLE001 - hub errors have many types; each means "not here"
        why = type(e).__name__
    if not hub_offline():
        try:
            return Path(snapshot_download(repo, allow_patterns=patterns))
        except Exception as e:  # noqa: BLE001 - as above
            why = type(e).__name__
    raise WeightsUnavailable(
        f"{option} hf:{repo}: not in the Hugging Face cache and cannot be downloaded ({why})"
    )


def fingerprint(folder: Path) -> str:
    """A content id of the checkpoint: its config and the whole-file SHA-256 of each weights
    file (read once per version of a file, then cached: `checkpoint_fingerprint`), so two
    fine-tunes of one size never share a vision cache or a caption record."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for pattern in _WEIGHTS:
        for path in sorted(folder.glob(pattern)):
            digest.update(f"{path.name}:{checkpoint_fingerprint(path)}".encode())
    return digest.hexdigest()[:16]
