"""A trained model folder's files: open_clip's local-dir layout plus the ITM head beside it.

The head (``itm_head.safetensors``, and ``itm_head.json``: config, calibration, alpha and the
fingerprint of the encoder weights it was trained with) is tied to its dual encoder: loading it
for any other encoder is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.atomic import replacing, write_text
from indexer.errors import ModelMismatch
from indexer.models.fingerprints import weights_fingerprint

if TYPE_CHECKING:  # torch loads only where a model is saved or loaded
    import torch
    from torch import nn

    from indexer.models.itm_head import ItmHead

HEAD_FILE = "itm_head.json"
HEAD_WEIGHTS = "itm_head.safetensors"
MODEL_WEIGHTS = "open_clip_model.safetensors"
MODEL_CONFIG = "open_clip_config.json"
# Candidates a reranked query rescores by default, and the pool the head's Platt calibration
# of the fused score is fitted on (recorded in itm_head.json as "calibration").
RERANK_K = 32


def _cpu_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_model_folder(
    out: Path, clip: nn.Module, head: ItmHead, model_cfg: dict, preprocess: dict, alpha: float
) -> str:
    """Write the dual encoder and its head to `out`; returns the encoder's fingerprint."""
    from safetensors.torch import save_file

    fingerprint = weights_fingerprint(clip)
    save_file(_cpu_tensors(clip), str(out / MODEL_WEIGHTS))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    (out / MODEL_CONFIG).write_text(json.dumps(config, indent=2))
    save_file(_cpu_tensors(head), str(out / HEAD_WEIGHTS))
    scale, bias = (float(v) for v in head.platt)
    meta = {
        "config": head.config.to_dict(),
        "alpha": alpha,
        "platt": {"scale": scale, "bias": bias},
        "calibration": {"score": "fused", "rerank_k": RERANK_K},
        "encoder_fingerprint": fingerprint,
    }
    (out / HEAD_FILE).write_text(json.dumps(meta, indent=2))
    return fingerprint


def load_head(path: str | os.PathLike[str], encoder: nn.Module, device: str = "cpu") -> ItmHead:
    """Load the head in `path` (a trained model folder) for `encoder`; refuses any other."""
    from safetensors.torch import load_file

    from indexer.models.itm_head import ItmConfig, ItmHead

    folder = Path(path)
    meta = json.loads((folder / HEAD_FILE).read_text())
    if meta["encoder_fingerprint"] != weights_fingerprint(encoder):
        raise ModelMismatch(
            f"the ITM head in {folder} was trained with another dual encoder "
            f"(fingerprint {meta['encoder_fingerprint']}); retrain it for this model"
        )
    head = ItmHead(ItmConfig(**meta["config"]))
    head.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    return head.to(device).eval()


def head_alpha(folder: Path) -> float:
    """The fused-score alpha recorded with the head in `folder`."""
    return float(json.loads((folder / HEAD_FILE).read_text())["alpha"])


def write_half_copy(source: Path, target: Path) -> None:
    """Copy the trained model folder `source` to `target` with every weight rounded to fp16.

    Half the bytes, for shipping a model with the package. The copy loads as float32 like any
    folder; its head records the fingerprint of the rounded encoder, which is what loading the
    copy computes, and its calibration as the rounded head holds it.
    """
    import shutil

    import open_clip
    from safetensors.torch import save_file

    clip = open_clip.create_model(f"local-dir:{source}")
    head = load_head(source, clip)
    for module in (clip, head):
        module.half().float()  # round in place: the copy must fingerprint as it will load
    meta = json.loads((source / HEAD_FILE).read_text())
    scale, bias = (float(v) for v in head.platt)
    meta.update(encoder_fingerprint=weights_fingerprint(clip), platt={"scale": scale, "bias": bias})
    target.mkdir(parents=True, exist_ok=True)
    for module, name in ((clip, MODEL_WEIGHTS), (head, HEAD_WEIGHTS)):
        with replacing(target / name) as tmp:
            save_file({k: v.half() for k, v in _cpu_tensors(module).items()}, str(tmp))
    with replacing(target / MODEL_CONFIG) as tmp:
        shutil.copyfile(source / MODEL_CONFIG, tmp)
    write_text(target / HEAD_FILE, json.dumps(meta, indent=2) + "\n")
