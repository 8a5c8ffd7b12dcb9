"""Model folders: the dual encoder and its ITM head saved together, and their fp16 copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY
from indexer.errors import ModelMismatch
from indexer.models.embedder import embed_texts
from indexer.models.loading import ModelSpec, load_model, register_configs
from indexer.models.model_files import (
    HEAD_FILE,
    HEAD_WEIGHTS,
    MODEL_WEIGHTS,
    load_head,
    save_model_folder,
    write_half_copy,
)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A model folder as `photoseek train` writes it: tiny random encoder and head."""
    import open_clip
    import torch

    from indexer.models.itm_head import ItmHead, head_config_for

    register_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY)
    head = ItmHead(head_config_for(clip))
    model_cfg = open_clip.get_model_config(TINY)
    folder = tmp_path / "model"
    folder.mkdir()
    save_model_folder(folder, clip, head, model_cfg, dict(clip.visual.preprocess_cfg), 0.5)
    return folder


def test_half_copy_loads_with_its_head_and_embeds_alike(model_folder: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    write_half_copy(model_folder, copy)
    for name in (MODEL_WEIGHTS, HEAD_WEIGHTS):
        ratio = (copy / name).stat().st_size / (model_folder / name).stat().st_size
        assert 0.45 < ratio < 0.55, (name, ratio)
    original = load_model(ModelSpec.parse(str(model_folder)), "fp32")
    rounded = load_model(ModelSpec.parse(str(copy)), "fp32")  # refuses a head of other weights
    assert rounded.head is not None and rounded.head_alpha == original.head_alpha == 0.5
    texts = ["a photo of a cat", "a red cube left of a blue ball"]
    a, b = embed_texts(original, texts), embed_texts(rounded, texts)
    assert np.min(np.sum(a * b, axis=1)) > 0.999
    meta = json.loads((copy / HEAD_FILE).read_text())
    assert meta["platt"] == {
        "scale": float(rounded.head.platt[0]),
        "bias": float(rounded.head.platt[1]),
    }


def test_a_head_refuses_an_encoder_it_was_not_trained_with(model_folder: Path):
    import open_clip

    other = open_clip.create_model(TINY)  # fresh random weights
    with pytest.raises(ModelMismatch, match="another dual encoder"):
        load_head(model_folder, other)
