"""A trained model folder loaded back: the dual encoder, its head and how to feed them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.models.itm_head import ItmHead
from indexer.models.model_files import HEAD_FILE, load_head

# An open_clip CLIP or CustomTextCLIP; open_clip ships no type hints to name it by.
ClipModel = Any


@dataclass
class Trained:
    """A loaded encoder + head pair, ready to score."""

    model: ClipModel
    head: ItmHead
    tokenizer: Any
    alpha: float
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str


def load_trained(out_dir: str | os.PathLike[str], device: str = "cpu") -> Trained:
    """The encoder and head `train` wrote to `out_dir`, in eval mode."""
    import open_clip

    folder = Path(out_dir).resolve()
    clip = open_clip.create_model(f"local-dir:{folder}").to(device).eval()
    head = load_head(folder, clip, device)
    meta = json.loads((folder / HEAD_FILE).read_text())
    cfg = clip.visual.preprocess_cfg
    return Trained(
        clip,
        head,
        open_clip.get_tokenizer(f"local-dir:{folder}"),
        meta["alpha"],
        int(clip.visual.image_size[0]),
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        device,
    )
