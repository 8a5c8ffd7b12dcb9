"""The image resize a model asks for (``indexer.media.decode.ImageInput``), read from its
open_clip preprocessing config, so that photoseek's decoder makes the pixels open_clip's own
``preprocess`` would: SigLIP, CLIPA, PE and DFN tags squash the photo, most others crop it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from indexer.errors import BadModelSpec
from indexer.media.decode import RESIZE_MODES, ImageInput


def preprocess_input(cfg: Mapping[str, Any]) -> ImageInput:
    """The resize of an open_clip preprocess config (``model.visual.preprocess_cfg``), with
    open_clip's defaults filled in; BadModelSpec for one the decoder does not implement."""
    size = cfg.get("size") or 224
    height, width = (size, size) if isinstance(size, int) else size
    # "random" means bicubic at eval, as in open_clip's image_transform.
    interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    resize_mode = cfg.get("resize_mode") or "shortest"
    if height != width or resize_mode not in RESIZE_MODES:
        raise BadModelSpec(
            f"the model's image transform ({height}x{width}, resize mode {resize_mode!r}, "
            f"{interpolation}) is not supported: the indexer only implements a square input, "
            "the shortest side resized and centre-cropped, or the whole image squashed"
        )
    # Not open_clip's: transformers' processors floor a crop's offset (`indexer.models.hf_dual`).
    return ImageInput(int(height), resize_mode, interpolation, cfg.get("crop_offset", "round"))


def known_input(model_cfg: Mapping[str, Any], preprocess: Mapping[str, Any]) -> ImageInput:
    """The resize of a model built from `model_cfg` (its vision_cfg's size) with the
    `preprocess` open_clip gives it (a tag's or a model folder's), before it is built."""
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return preprocess_input({**preprocess, "size": size})


def folder_input(folder: str | os.PathLike[str]) -> ImageInput | None:
    """The resize of the model in an open_clip model folder (or a cached hub snapshot): its
    model_cfg's size with its own preprocess_cfg; None when it has no readable config."""
    try:
        raw = json.loads((Path(folder) / "open_clip_config.json").read_text())
        model_cfg, preprocess = raw["model_cfg"], raw.get("preprocess_cfg") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(model_cfg, dict) or not isinstance(preprocess, dict):
        return None
    return known_input(model_cfg, preprocess)
