"""How a --model wants its photos resized, known before loading it: indexing decodes photos while
the model loads, so the decoder must already crop or squash as the model's own preprocess does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY
from indexer.errors import BadModelSpec
from indexer.locations import data_dir
from indexer.media.decode import ImageInput
from indexer.models.image_input import preprocess_input
from indexer.models.loading import ModelSpec


def _folder(parent: Path, preprocess: dict | None) -> Path:
    """An open_clip model folder's config (weights are not needed to know the resize)."""
    config = json.loads((data_dir() / "model_configs" / f"{TINY}.json").read_text())
    parent.mkdir(parents=True, exist_ok=True)
    raw = {"model_cfg": config, **({"preprocess_cfg": preprocess} if preprocess else {})}
    (parent / "open_clip_config.json").write_text(json.dumps(raw))
    return parent


@pytest.mark.parametrize(
    ("model", "want"),
    [
        ("ViT-B-32:laion2b_s34b_b79k", ImageInput(224, "shortest", "bicubic")),
        ("ViT-B-16-SigLIP:webli", ImageInput(224, "squash", "bicubic")),
        ("PE-Core-T-16-384:meta", ImageInput(384, "squash", "bilinear")),
        ("ViT-B-32:/nowhere/mine.pt", ImageInput(224, "shortest", "bicubic")),  # a file: no tag
    ],
)
def test_a_tags_resize_is_known_without_its_weights(model: str, want: ImageInput) -> None:
    assert ModelSpec.parse(model).image_input() == want


def test_a_model_folders_resize_comes_from_its_config(tmp_path: Path) -> None:
    plain = _folder(tmp_path / "plain", None)
    assert ModelSpec.parse(str(plain)).image_input() == ImageInput(64)
    squash = _folder(tmp_path / "squash", {"resize_mode": "squash", "size": 999})
    assert ModelSpec.parse(str(squash)).image_input() == ImageInput(64, "squash")  # its own size
    assert ModelSpec.parse(f"local-dir:{tmp_path / 'empty'}").image_input() is None


def test_an_uncached_hub_model_is_only_known_once_loaded() -> None:
    assert ModelSpec.parse("hf-hub:timm/ViT-B-16-SigLIP").image_input() is None


def test_a_resize_the_decoder_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    longest = _folder(tmp_path / "longest", {"resize_mode": "longest"})
    with pytest.raises(BadModelSpec, match="not supported") as e:
        ModelSpec.parse(str(longest)).image_input()
    assert "\n" not in str(e.value)
    with pytest.raises(BadModelSpec, match="48x80"):
        preprocess_input({"size": [48, 80]})


def test_random_interpolation_means_bicubic_as_in_open_clip() -> None:
    assert preprocess_input({"size": 32, "interpolation": "random"}).interpolation == "bicubic"
