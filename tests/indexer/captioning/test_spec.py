"""--captioner SPEC forms: each one parsed without loading a model, anything else one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO
from indexer.captioning import Generation, load_captioner, parse_captioner
from indexer.captioning.spec import index_model_captioner
from indexer.errors import BadCaptioner, WeightsUnavailable

COCA_TAG = "coca:coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k"


def test_the_spec_forms(coca_folder: Path, tmp_path: Path):
    tag = parse_captioner(COCA_TAG)
    assert (tag.kind, tag.model.kind, tag.model.name) == ("coca", "tag", "coca_ViT-B-32")
    assert tag.source == COCA_TAG
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    file = parse_captioner(f"coca:coca_ViT-B-32:{weights}")
    assert (file.model.kind, file.model.weights) == ("file", str(weights))
    folder = parse_captioner(str(coca_folder))
    assert (folder.kind, folder.model.kind, folder.source) == (
        "coca",
        "local-dir",
        str(coca_folder),
    )
    hub = parse_captioner("hf:Salesforce/blip-image-captioning-base")
    assert (hub.kind, hub.repo, hub.folder) == ("hf", "Salesforce/blip-image-captioning-base", None)


def test_hf_folders(blip_captioner: Path, git_captioner: Path):
    assert parse_captioner(str(blip_captioner)).folder == blip_captioner
    assert parse_captioner(str(git_captioner)).kind == "hf"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty --captioner"),
        ("coca", "names no captioner"),
        ("coca:coca_ViT-B-32", "want coca:ARCH:TAG"),
        ("coca:no-such-arch:tag", "unknown architecture 'no-such-arch'"),
        ("coca:ViT-B-32:laion2b_s34b_b79k", "ViT-B-32 is not a CoCa"),
        ("hf:just-a-name", "want hf:ORG/NAME"),
        ("/no/such/folder", "names no captioner"),
    ],
)
def test_bad_specs_are_one_line(spec: str, fragment: str):
    with pytest.raises(BadCaptioner) as raised:
        parse_captioner(spec)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_folders_that_are_not_captioners(tmp_path: Path, blip_captioner: Path):
    with pytest.raises(BadCaptioner, match="not a CoCa"):
        parse_captioner(str(REPO / "data" / "demo-model"))  # an open_clip CLIP
    with pytest.raises(BadCaptioner, match="BlipForImageTextRetrieval, not a Blip"):
        parse_captioner(str(blip_captioner.with_name(blip_captioner.name + "-itm")))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BadCaptioner, match="model_type 'bert' is not a captioner"):
        parse_captioner(str(bert))
    with pytest.raises(BadCaptioner, match="not a model folder"):
        parse_captioner(str(tmp_path))


def test_an_uncached_tag_offline_is_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="offline and not in the local cache"):
        load_captioner(COCA_TAG, device="cpu")


def test_the_index_model_as_captioner(coca_folder: Path, tiny_checkpoint: str):
    found = index_model_captioner(f"local-dir:{coca_folder}")
    assert found is not None and found.source == str(coca_folder)
    assert index_model_captioner(tiny_checkpoint) is None
    assert index_model_captioner("transformers:org/name") is None


def test_generation_settings_are_checked():
    with pytest.raises(BadCaptioner, match="unknown caption mode 'nucleus'"):
        Generation("nucleus")
    with pytest.raises(BadCaptioner, match="caption length"):
        Generation(max_tokens=5, min_tokens=5)
    with pytest.raises(BadCaptioner, match="caption sampling"):
        Generation("top_p", top_p=0.0)
    assert Generation().key() != Generation(max_tokens=10).key()
    assert Generation("top_k", seed=1).key() != Generation("top_k", seed=2).key()
