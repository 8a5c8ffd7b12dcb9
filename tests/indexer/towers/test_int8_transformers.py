"""The int8 ONNX Runtime image engine for transformers dual encoders: what `--precision auto`
picks on a CPU, built from tiny random models saved with save_pretrained,
against the model's own fp32 torch image tower; ALIGN (EfficientNet) is refused it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hf_dual_models import FAMILIES, save_family
from PIL import Image

import indexer.models.precision
from indexer.errors import BadModelSpec
from indexer.media.decode import decode
from indexer.models.embedder import ImageEmbedder
from indexer.models.loading import ModelSpec, load_model
from indexer.towers.image_engine import open_image_embedder, open_onnx_engine

INT8_AGREEMENT = 0.995  # as for open_clip models (tests/indexer/models/test_image_engine.py)


def _pixels(size: int, count: int = 8) -> np.ndarray:
    """Real PNG files of several shapes, decoded as the indexer decodes them."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(count):
        width, height = 40 + 9 * i, 70 - 4 * i
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[:, : width // 2] //= 2 + i % 3
        data = io.BytesIO()
        Image.fromarray(pixels).save(data, format="PNG")
        out.append(decode(data.getvalue(), b".png", size).pixels)
    return np.stack(out)


SERVED = [f for f in FAMILIES if f.name != "align"]
ALIGN = next(f for f in FAMILIES if f.name == "align")


@pytest.mark.parametrize("family", SERVED, ids=lambda f: f.name)
def test_int8_engine_agrees_with_the_fp32_tower(family, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = ModelSpec.parse(f"transformers:{save_family(family, tmp_path / family.name)}")
    reference = ImageEmbedder(load_model(spec, "fp32", "cpu", "image"))
    engine = open_image_embedder(spec, "int8", "cpu")
    assert (engine.engine, engine.precision) == ("onnxruntime", "int8")
    pixels = _pixels(engine.image_size)
    expected, got = reference(pixels), engine(pixels)
    assert got.shape == expected.shape and got.dtype == np.float32
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= INT8_AGREEMENT, cosines
    assert not np.allclose(got, expected, atol=1e-5)  # its weights really were quantised
    # fp32 on ONNX Runtime is the torch tower: the graph itself is exact
    exact = open_onnx_engine(spec, "fp32")(pixels)
    assert ((exact * expected).sum(axis=1)).min() >= 0.9999


def test_align_is_refused_int8_and_auto_falls_back_to_the_torch_tower(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = ModelSpec.parse(f"transformers:{save_family(ALIGN, tmp_path / 'align')}")
    with pytest.raises(BadModelSpec, match="no int8 engine: its EfficientNet") as refused:
        open_image_embedder(spec, "int8", "cpu")
    assert "\n" not in str(refused.value) and "--precision fp32" in str(refused.value)
    # auto means int8 for every other family; ALIGN gets what auto means for a torch tower
    for features, expected in ((frozenset(), "fp32"), (frozenset({"avx512_bf16"}), "bf16")):
        monkeypatch.setattr(indexer.models.precision, "cpu_features", lambda f=features: f)
        chosen = open_image_embedder(spec, "auto", "cpu")
        assert (chosen.engine, chosen.precision) == ("torch", expected)
    assert not (tmp_path / "cache" / "image-engines").exists()  # nothing was built
