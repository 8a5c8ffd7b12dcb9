"""The dual encoder a run starts from: a fresh architecture or pretrained weights."""

from __future__ import annotations

from typing import Any

import torch

from indexer.errors import BadInput
from indexer.training.options import TrainOptions
from indexer.training.trained import ClipModel

DEFAULT_ARCHITECTURE = "photoseek-shapes"


def create_model(
    model: str | None, seed: int, options: TrainOptions, locked: bool
) -> tuple[ClipModel, dict[str, Any], Any]:
    """The open_clip model to train, its config dict and its tokenizer. `locked`: a tower is
    to stay frozen, which only makes sense for pretrained weights."""
    import open_clip

    from indexer.models.loading import ModelSpec, load_model, register_configs

    register_configs()
    torch.manual_seed(seed)
    if model is None or model in open_clip.list_models():
        if locked:
            raise BadInput(
                "locking a tower freezes pretrained weights: give the encoder with --model"
            )
        name = model or DEFAULT_ARCHITECTURE
        clip = open_clip.create_model(name)
        with torch.no_grad():
            clip.logit_scale.fill_(options.init_logit_scale)
        cfg = open_clip.get_model_config(name)
        return clip, cfg, open_clip.get_tokenizer(name)
    spec = ModelSpec.parse(model)
    cfg = spec.config()
    if cfg is None:
        raise BadInput(f"cannot read the architecture config of {model}")
    loaded = load_model(spec, precision="fp32", device="cpu")
    return loaded.model, cfg, loaded.tokenizer
