"""What photoseek knows about a transformers dual encoder (CLIP, SigLIP, ALIGN, AltCLIP,
Chinese-CLIP) without importing torch or transformers: which class serves a model type, where
a ``save_pretrained`` folder keeps its weights, and its image processor's settings as photoseek's
decoder resize and standardisation (``indexer.models.hf_dual`` loads the model itself).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import BadModelSpec, WeightsUnavailable

PREFIX = "transformers:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILE = "preprocessor_config.json"
_RESAMPLING = {2: "bilinear", 3: "bicubic"}  # PIL's numbers, as processors store them


@dataclass(frozen=True)
class Family:
    """How photoseek serves one transformers model class."""

    cls: str  # the class AutoModel builds for this model_type
    # "causal": no padding mask (a causal tower pools at its end token, padding comes after);
    # "none": none either (SigLIP was trained on padded text, unmasked); "pad": mask the pad id
    mask: str
    no_int8: str = ""  # why the int8 image engine is not offered for the family ("": it is)


# Dynamic int8 quantisation (weights per channel, activations per batch) keeps transformer
# towers within 0.995 cosine of fp32; EfficientNet's depthwise convolutions do not keep it.
_CONVOLUTIONS = (
    "its EfficientNet image tower loses too much under dynamic int8 quantisation (cosine to "
    "fp32 0.988 on a test model, below the 0.995 photoseek requires)"
)

FAMILIES = {
    "clip": Family("CLIPModel", "causal"),
    "siglip": Family("SiglipModel", "none"),
    "align": Family("AlignModel", "pad", no_int8=_CONVOLUTIONS),
    "altclip": Family("AltCLIPModel", "pad"),
    "chinese_clip": Family("ChineseCLIPModel", "pad"),
}


def model_type(folder: Path) -> str | None:
    """The transformers model_type of a folder's config.json (None when it has none)."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) else None


def family(kind: str | None, source: str) -> Family:
    """The family of a model_type, or BadModelSpec naming the ones photoseek serves."""
    if kind not in FAMILIES:
        raise BadModelSpec(
            f"{source}: transformers model type {kind!r} is not a dual encoder photoseek serves "
            f"({', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[kind]


def weights_file(folder: Path) -> Path:
    """A save_pretrained folder's weights file (a single file: sharded ones are refused)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsUnavailable(f"{folder}: no {' or '.join(WEIGHT_FILES)} in the model folder")


def processor_preprocess(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """An image processor's settings (preprocessor_config.json) as an open_clip preprocess
    config: the resize, and mean/std on photoseek's 0-1 scale with its rescale folded in."""
    size, crop = raw.get("size") or {}, raw.get("crop_size") or {}
    crops = bool(raw.get("do_center_crop"))
    if "shortest_edge" in size:
        side, mode = int(size["shortest_edge"]), "shortest"
    elif size.get("height") is not None and size.get("height") == size.get("width"):
        side, mode = int(size["height"]), "squash"
    else:
        raise BadModelSpec(f"{source}: image processor size {size!r} is not supported")
    if crops and (crop.get("height"), crop.get("width")) != (side, side):
        raise BadModelSpec(
            f"{source}: the image processor resizes to {side} and crops to {crop!r}; photoseek "
            "only crops to the size it resizes to"
        )
    resample = raw.get("resample", 3)
    if resample not in _RESAMPLING:
        raise BadModelSpec(f"{source}: image processor resample {resample!r} is not supported")
    factor = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    offset = 1.0 if raw.get("rescale_offset") else 0.0
    normalise = raw.get("do_normalize", True)
    mean = _three(raw.get("image_mean", 0.0) if normalise else 0.0)
    std = _three(raw.get("image_std", 1.0) if normalise else 1.0)
    # EfficientNet's processor (ALIGN) divides by image_std once more, normalising or not.
    again = _three(raw.get("image_std", 1.0) if raw.get("include_top") else 1.0)
    # ((p * factor - offset - m) / s) / again == (p / 255 - m') / s' on photoseek's p / 255
    return {
        "size": side,
        "resize_mode": mode,
        "interpolation": _RESAMPLING[resample],
        "crop_offset": "floor",  # transformers' center_crop floors (h - crop) / 2
        "mean": [(offset + m) / (255 * factor) for m in mean],
        "std": [s * a / (255 * factor) for s, a in zip(std, again, strict=True)],
    }


def _three(value: float | Sequence[float]) -> list[float]:
    return [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]


def folder_preprocess(folder: Path) -> dict[str, Any] | None:
    """A save_pretrained folder's image preprocessing, read without transformers (None when
    it has no processor config to read)."""
    try:
        raw = json.loads((folder / PROCESSOR_FILE).read_text())
    except (OSError, ValueError):
        return None
    return processor_preprocess(raw, str(folder)) if isinstance(raw, dict) else None


def is_model_folder(folder: Path) -> bool:
    """Whether `folder` is a transformers save_pretrained folder (not an open_clip one)."""
    return (folder / "config.json").is_file() and not (folder / "open_clip_config.json").exists()


def source_preprocess(source: str) -> dict[str, Any] | None:
    """The image preprocessing of a folder, or of a repository once it is in the hub cache."""
    if Path(source).is_dir():
        return folder_preprocess(Path(source))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, PROCESSOR_FILE)
    return folder_preprocess(Path(cached).parent) if isinstance(cached, str) else None


def int8_refusal(source: str) -> str | None:
    """Why the int8 image engine is not offered for the model at `source` (a folder, or a
    repository in the hub cache); None where it is, or where its type is not known here."""
    folder: Path | None = Path(source)
    if not Path(source).is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        folder = Path(cached).parent if isinstance(cached, str) else None
    known = FAMILIES.get(model_type(folder) or "") if folder is not None else None
    return known.no_int8 or None if known is not None else None


def folder_source(text: str) -> str:
    """The model a ``transformers:`` value names: a folder (made absolute) or a repository id."""
    folder = Path(text).expanduser()
    return str(folder.resolve()) if folder.is_dir() or os.sep in text[:1] else text
