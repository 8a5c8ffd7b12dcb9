"""Parse a --captioner SPEC without importing torch: which captioner it names and from where.

- ``coca:ARCH:TAG``   an open_clip CoCa architecture and pretrained tag
                      (``coca:coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k``)
- ``coca:ARCH:FILE``  the same architecture with a local checkpoint
- ``DIR``             an open_clip model folder (``open_clip_config.json``) whose model is a CoCa,
                      or a transformers ``save_pretrained`` folder of a BLIP or GIT captioner
- ``hf:ORG/NAME``     a transformers captioner repository (from the Hugging Face cache offline)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import BadCaptioner, BadModelSpec
from indexer.models.loading import ModelSpec

HF_EXTRA = "pip install 'photoseek[hf]'"
# transformers model_type -> the captioning class photoseek loads for it
HF_CLASSES = {"blip": "BlipForConditionalGeneration", "git": "GitForCausalLM"}
_FORMS = "coca:ARCH:TAG, coca:ARCH:/path/to/checkpoint, hf:ORG/NAME, or a model folder"


@dataclass(frozen=True)
class CaptionerSpec:
    """A parsed --captioner value."""

    kind: str  # "coca" | "hf"
    source: str  # the text as given, folders made absolute
    model: ModelSpec | None = None  # kind "coca": the open_clip model to load
    repo: str = ""  # kind "hf": the repository id, or "" for a folder
    folder: Path | None = None  # kind "hf": the save_pretrained folder, when local


def parse_captioner(text: str) -> CaptionerSpec:
    """The captioner `text` names; BadCaptioner (one line) for anything else."""
    text = text.strip()
    if not text:
        raise BadCaptioner(f"empty --captioner value; use {_FORMS}")
    if text.startswith("hf:"):
        repo = text[3:]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise BadCaptioner(f"--captioner {text!r}: want hf:ORG/NAME")
        return CaptionerSpec("hf", text, repo=repo)
    if text.startswith("coca:"):
        return _coca(text)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return _folder(folder.resolve())
    raise BadCaptioner(f"--captioner {text!r} names no captioner; use {_FORMS}")


def coca_model(model: ModelSpec) -> bool:
    """Whether an open_clip --model is a CoCa, from its config (no loading)."""
    config = model.config()
    return isinstance(config, dict) and "multimodal_cfg" in config


def index_model_captioner(model_text: str) -> CaptionerSpec | None:
    """The captioner an index's --model is when that is an open_clip CoCa, else None."""
    try:
        model = ModelSpec.parse(model_text)
    except BadModelSpec:
        return None
    if model.kind not in ("tag", "file", "local-dir") or not coca_model(model):
        return None
    source = model.name if model.kind == "local-dir" else f"coca:{model}"
    return CaptionerSpec("coca", source, model=model)


def _coca(text: str) -> CaptionerSpec:
    rest = text[len("coca:") :]
    if not rest.partition(":")[2]:
        raise BadCaptioner(f"--captioner {text!r}: want coca:ARCH:TAG or coca:ARCH:FILE")
    try:
        model = ModelSpec.parse(rest)
    except BadModelSpec as e:
        raise BadCaptioner(f"--captioner {text!r}: {e}") from None
    if model.kind not in ("tag", "file"):
        raise BadCaptioner(f"--captioner {text!r}: want coca:ARCH:TAG or coca:ARCH:FILE")
    if model.config() is None:
        raise BadCaptioner(f"--captioner {text!r}: unknown architecture {model.name!r}")
    if not coca_model(model):
        raise BadCaptioner(f"--captioner {text!r}: {model.name} is not a CoCa (no multimodal_cfg)")
    return CaptionerSpec("coca", f"coca:{model}", model=model)


def _folder(folder: Path) -> CaptionerSpec:
    if (folder / "open_clip_config.json").is_file():
        model = ModelSpec("local-dir", str(folder))
        if not coca_model(model):
            raise BadCaptioner(
                f"--captioner {folder}: the open_clip model there is not a CoCa (its config "
                "has no multimodal_cfg), so it cannot write captions"
            )
        return CaptionerSpec("coca", str(folder), model=model)
    config = _json(folder / "config.json")
    if config is None:
        raise BadCaptioner(
            f"--captioner {folder}: not a model folder (no open_clip_config.json or config.json)"
        )
    check_hf_config(config, str(folder))
    return CaptionerSpec("hf", str(folder), folder=folder)


def check_hf_config(config: dict[str, Any], source: str) -> str:
    """The captioning class a transformers config.json asks for; BadCaptioner when it is not
    a captioner photoseek serves (another model type, or BLIP's retrieval head)."""
    kind = config.get("model_type")
    if kind not in HF_CLASSES:
        raise BadCaptioner(
            f"--captioner {source}: model_type {kind!r} is not a captioner photoseek serves "
            f"({', '.join(f'{k} ({c})' for k, c in HF_CLASSES.items())})"
        )
    wanted = HF_CLASSES[str(kind)]
    classes = config.get("architectures") or [wanted]
    if wanted not in classes:
        raise BadCaptioner(
            f"--captioner {source}: the checkpoint is a {', '.join(map(str, classes))}, "
            f"not a {wanted}: it does not write captions"
        )
    return wanted


def _json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None
