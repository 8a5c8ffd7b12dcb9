"""What the Hugging Face cache already holds: a tag's weights, a hub model, and how a tag
preprocesses. Looked up in the cache only, so a cached model loads with no connection."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's names
_CONFIG = "open_clip_config.json"


def cached_tag_checkpoint(name: str, tag: str) -> str | None:
    """The local path of a pretrained tag's weights when the hub cache holds them."""
    import open_clip

    hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub[:-1], "")
    return _cached(repo, [filename] if filename else _WEIGHTS)


def tag_preprocess(name: str, tag: str) -> dict[str, Any]:
    """A pretrained tag's own preprocessing (mean/std, interpolation, resize mode). open_clip
    applies it only when it is given the tag, not the tag's file: whoever loads the cached
    file passes it along, so that every run embeds as the first (downloading) one did."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    keys = {f.name for f in fields(PreprocessCfg)} - {"size"}  # the size is the model's own
    cfg = open_clip.get_pretrained_cfg(name, tag)
    return {key: value for key, value in cfg.items() if key in keys}


def hub_snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of hub repository `repo` when it holds both open_clip's
    config and weights: the model loads from there as a local folder."""
    config, weights = _cached(repo, [_CONFIG]), _cached(repo, _WEIGHTS)
    if config is None or weights is None or Path(config).parent != Path(weights).parent:
        return None
    return Path(config).parent


def hub_offline() -> bool:
    """Whether the hub is not to be asked (HF_HUB_OFFLINE): read now as well as where
    huggingface_hub read it, once, when it was imported."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return now or bool(constants.HF_HUB_OFFLINE)


def _cached(repo: str, names: list[str] | tuple[str, ...]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return hit
    return None
