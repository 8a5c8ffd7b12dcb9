"""The torch image embedder: what it feeds the tower, and what that costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.models.embedder import ImageEmbedder
from indexer.models.loading import ModelSpec, load_model
from indexer.models.pixels import standardise


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_embeddings_are_the_one_shot_casts(tiny_checkpoint: str, precision: str) -> None:
    """Standardising a few images at a time gives the tower the very input (values, dtype and
    strides) that standardising and casting the whole batch at once gave it."""
    loaded = load_model(ModelSpec.parse(tiny_checkpoint), precision, "cpu", "image")
    size = loaded.image_size
    pixels = np.random.default_rng(3).integers(0, 256, (11, size, size, 3), dtype=np.uint8)
    with torch.inference_mode():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        x = standardise(x, loaded.mean, loaded.std).to(loaded.dtype)
        expected = torch.nn.functional.normalize(loaded.model.encode_image(x).float(), dim=-1)
    embedder = ImageEmbedder(loaded)
    given = embedder._tower_input(pixels)
    assert given.dtype == x.dtype and given.stride() == x.stride() and torch.equal(given, x)
    assert np.array_equal(embedder(pixels), expected.numpy())
