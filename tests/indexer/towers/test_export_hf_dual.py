"""transformers dual encoders (CLIP, SigLIP, Chinese-CLIP, AltCLIP, ALIGN) from save_pretrained
folders: loaded as photoseek models, their towers exported to ONNX, and the torch-free query
path giving the ids and embeddings the model's own tokenizer, processor and torch give."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_dual_models import FAMILIES, DualFamily, align_config, save_family
from hf_families import TEXTS
from PIL import Image

from indexer.errors import BadModelSpec, WeightsUnavailable
from indexer.media.decode import decode
from indexer.models.embedder import ImageEmbedder, embed_texts
from indexer.models.fingerprints import checkpoint_fingerprint
from indexer.models.loading import LoadedModel, ModelSpec, load_model
from indexer.towers.export import export_towers
from indexer.towers.spec import TOWERS_FILE
from search.encoders.hf_tokenizer import HfTokenizer
from search.encoders.towers import ImageEncoder, TextEncoder

SHAPES = [(90, 40), (33, 70), (64, 64)]


def _photos() -> list[tuple[bytes, str]]:
    rng = np.random.default_rng(7)
    out = []
    for width, height in SHAPES:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[:, : width // 2] //= 3  # halves that differ, so crop and squash differ
        data = io.BytesIO()
        Image.fromarray(pixels).save(data, format="PNG")
        out.append((data.getvalue(), "png"))
    return out


PHOTOS = _photos()


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def exported(request, tmp_path_factory) -> tuple[DualFamily, Path, LoadedModel, Path]:
    """Each family saved, loaded by photoseek as `DIR` and exported."""
    family = request.param
    folder = save_family(family, tmp_path_factory.mktemp(family.name))
    loaded = load_model(ModelSpec.parse(str(folder)), "fp32", "cpu")
    towers = export_towers(loaded.model, folder.parent / "towers", tokenizer=loaded.tokenizer)
    return family, folder, loaded, towers


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return np.sum(a * (b / np.linalg.norm(b, axis=1, keepdims=True)), axis=1)


def _features(out) -> np.ndarray:
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).detach().numpy()


def _their_text(family: DualFamily, folder: Path, length: int) -> np.ndarray:
    """The text embeddings as transformers' own usage gives them: the model's tokenizer,
    padded to the length, its attention mask passed where the model takes one."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokens = AutoTokenizer.from_pretrained(folder, local_files_only=True)(
        TEXTS, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    )
    mask = tokens.attention_mask if family.masked else None
    with torch.no_grad():
        return _features(model.get_text_features(input_ids=tokens.input_ids, attention_mask=mask))


def _their_images(folder: Path) -> np.ndarray:
    """The image embeddings from the model's own (PIL) image processor."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in PHOTOS]
    pixels = processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        return _features(model.get_image_features(pixel_values=pixels))


def test_a_save_pretrained_folder_is_a_transformers_model(exported) -> None:
    _, folder, loaded, _ = exported
    spec = ModelSpec.parse(str(folder))
    assert (spec.kind, str(spec)) == ("transformers", f"transformers:{folder}")
    assert ModelSpec.parse(f"transformers:{folder}") == spec
    assert spec.identity().weights == checkpoint_fingerprint(folder / "model.safetensors")
    assert spec.image_input() == loaded.image_input  # known before loading, for decoding


def test_query_ids_are_the_models_tokenizers(exported) -> None:
    _, _, loaded, towers = exported
    spec = json.loads((towers / TOWERS_FILE).read_text())
    hf = TextEncoder(towers).spec.tokenizer
    assert hf is not None and hf.clean == "none"
    ours = HfTokenizer(towers / hf.file, hf, spec["context_length"])(TEXTS)
    np.testing.assert_array_equal(ours, loaded.tokenizer(TEXTS).numpy())


def test_onnx_text_tower_matches_transformers(exported) -> None:
    family, folder, loaded, towers = exported
    theirs = _their_text(family, folder, loaded.tokenizer.context_length)
    assert _cosines(TextEncoder(towers).encode(TEXTS), theirs).min() >= 0.9999
    assert _cosines(embed_texts(loaded, TEXTS), theirs).min() >= 0.9999  # indexing's torch


def test_photoseek_pixels_embed_as_the_models_processor(exported) -> None:
    _, folder, loaded, towers = exported
    theirs = _their_images(folder)
    encoder = ImageEncoder(towers)
    pixels = np.stack([decode(data, ext, encoder.image_input).pixels for data, ext in PHOTOS])
    assert _cosines(encoder.encode(pixels), theirs).min() >= 0.999  # the query path
    assert _cosines(ImageEmbedder(loaded)(pixels), theirs).min() >= 0.999  # indexing


def test_sigmoid_scoring_travels_with_siglip(exported) -> None:
    family, _, loaded, towers = exported
    score = TextEncoder(towers).score
    assert score.kind == ("sigmoid" if family.name == "siglip" else "cosine")
    assert score.logit_scale == pytest.approx(float(loaded.model.logit_scale.exp()))


def test_unserved_transformers_models_are_refused_in_one_line(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")  # fmt: skip
    align = next(f for f in FAMILIES if f.name == "align")
    wide = save_family(align, tmp_path / "align", align_config(align.tokenizer(), projection=24))
    cases = [
        (tmp_path / "bert", BadModelSpec, "'bert' is not a dual encoder"),
        (wide, BadModelSpec, "ALIGN's image embedding is 32 wide"),
        ("transformers:nobody/nothing", WeightsUnavailable, "cannot load weights"),
    ]
    for model, error, message in cases:
        with pytest.raises(error, match=message) as e:
            load_model(ModelSpec.parse(str(model)), "fp32", "cpu")
        assert "\n" not in str(e.value)


def test_an_index_of_a_transformers_model_answers_without_torch(tmp_path: Path) -> None:
    """End to end (needs the pipeline/engine patch): `photoseek index --model DIR` on a
    transformers folder stores the model's own image embeddings, and a text and an image query
    through the exported towers meet them."""
    from indexer.pipeline import IndexOptions, run_index
    from indexer.store.catalog import Catalog
    from search.engine import Engine

    family = next(f for f in FAMILIES if f.name == "chinese_clip")  # squashes, masks padding
    folder = save_family(family, tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (data, ext) in enumerate(PHOTOS):
        (photos / f"photo {i}.{ext}").write_bytes(data)
    options = IndexOptions(roots=(photos,), model=str(folder), precision="fp32")
    run_index(tmp_path / "idx", options)
    catalog = Catalog.open(tmp_path / "idx")
    rows = sorted(catalog.all_rows(status="ok"), key=lambda r: r.path)
    stored = catalog.vectors(np.array([r.id for r in rows]), 24)
    assert _cosines(stored, _their_images(folder)).min() >= 0.999
    with Engine.open(tmp_path / "idx") as engine:
        theirs = _their_text(family, folder, 40)
        assert _cosines(engine.encode_texts(TEXTS), theirs).min() >= 0.9999
        assert _cosines(engine.encode_images([bytes(rows[0].path)]), stored[:1])[0] >= 0.9999
