"""towers.json across photoseek versions: format 6 gained `crop_offset` (and the squash and
bilinear resizes, and tokenizers with no cleaning) without a version bump, because every
format-6 file written before could only hold the transform those additions default to; any
other version is refused with one line saying to re-export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import ModelMismatch
from indexer.towers.spec import FORMAT_VERSION, TOWERS_FILE, TowersSpec

# towers.json as the export wrote it before squash resizes and transformers models (commit
# 2dd3d52): that export refused every transform but a square, shortest-side bicubic crop.
BEFORE_CROP_OFFSET = {
    "context_length": 77,
    "embed_dim": 128,
    "image": {
        "size": 64,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    },
    "text_file": "text-0123456789ab.onnx",
    "image_file": "image-0123456789ab.onnx",
    "text_trimmed": True,
    "rerank": None,
    "vocab_file": "bpe_simple_vocab_16e6.txt.gz",
    "tokenizer": None,
    "score": {"kind": "cosine", "logit_scale": 1.0, "logit_bias": 0.0},
    "version": 6,
}


def write(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TOWERS_FILE).write_text(json.dumps(raw, indent=2))
    return folder


def test_a_format_6_file_from_before_crop_offset_reads_as_the_crop_it_was_made_with(
    tmp_path: Path,
) -> None:
    assert FORMAT_VERSION == 6  # a bump would re-export every cached tower for nothing
    spec = TowersSpec.read(write(tmp_path, BEFORE_CROP_OFFSET))
    assert (spec.image.resize_mode, spec.image.interpolation) == ("shortest", "bicubic")
    assert spec.image.crop_offset == "round"  # what model_input did before "floor" existed
    # written again today, the file differs from the old one by the added field alone
    rewritten = json.loads(spec.to_json())
    image = rewritten["image"]
    assert image.pop("crop_offset") == "round"
    assert image == {**BEFORE_CROP_OFFSET["image"]}
    del rewritten["image"]
    assert rewritten == {k: v for k, v in BEFORE_CROP_OFFSET.items() if k != "image"}


@pytest.mark.parametrize("version", [4, 5, 7, None])
def test_another_format_version_is_refused_with_one_line(tmp_path: Path, version: int | None):
    raw = {**BEFORE_CROP_OFFSET, "version": version}
    if version is None:
        del raw["version"]
    with pytest.raises(ModelMismatch, match="re-export the towers") as caught:
        TowersSpec.read(write(tmp_path, raw))
    assert "\n" not in str(caught.value)
