"""Models whose text side is a Hugging Face tokenizer or text encoder, on the torch-free path:
the query ids must be open_clip's, and the ONNX text embedding torch's, in many scripts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from hf_families import FAMILIES, TEXTS, Family, build

from helpers import assert_runs_without_torch
from indexer.errors import BadModelSpec, IndexNotFound
from indexer.locations import TOWERS_DIR
from indexer.models.loading import ModelIdentity
from indexer.store.catalog import Catalog, NewImage
from indexer.store.index_dir import ModelRecord
from indexer.store.vector_store import VectorStore, sync
from indexer.towers.export import export_towers
from indexer.towers.spec import TOWERS_FILE, TowersSpec
from search.encoders.hf_tokenizer import HfTokenizer
from search.encoders.towers import TextEncoder
from search.engine import Engine, brute_force_knn
from search.query import Term


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(model, open_clip tokenizer, towers folder) of one family, exported once."""
    spec: Family = request.param
    folder = tmp_path_factory.mktemp(spec.name)
    name = build(spec, folder)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained_text=False).eval()
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer, export_towers(model, folder / "towers", tokenizer=tokenizer)


def _torch_text(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model.encode_text(tokenizer(texts), normalize=True).numpy()


def test_query_ids_are_open_clips(family) -> None:
    _, tokenizer, towers = family
    spec = TowersSpec.read(towers)
    assert spec.tokenizer is not None and not spec.text_trimmed
    ours = HfTokenizer(towers / spec.tokenizer.file, spec.tokenizer, spec.context_length)
    expected = tokenizer(TEXTS).numpy()
    np.testing.assert_array_equal(ours(TEXTS), expected)
    np.testing.assert_array_equal(ours(TEXTS[3]), expected[3:4])
    assert ours([]).shape == (0, spec.context_length)


def test_text_embedding_matches_torch(family) -> None:
    model, tokenizer, towers = family
    ours = TextEncoder(towers, batch_size=4).encode(TEXTS)
    cosine = np.sum(ours * _torch_text(model, tokenizer, TEXTS), axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_export_writes_the_tokenizer_not_the_bpe(family) -> None:
    _, tokenizer, towers = family
    spec = json.loads((towers / TOWERS_FILE).read_text())
    assert (towers / spec["tokenizer"]["file"]).is_file()
    assert not (towers / spec["vocab_file"]).exists()
    assert spec["tokenizer"]["pad_id"] == tokenizer.tokenizer.pad_token_id


def test_sigmoid_models_record_their_logit_bias(family) -> None:
    model, _, towers = family
    score = TowersSpec.read(towers).score
    assert score.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    if model.logit_bias is None:
        assert (score.kind, score.logit_bias) == ("cosine", 0.0)
    else:
        assert (score.kind, score.logit_bias) == ("sigmoid", pytest.approx(-10.0))


def test_clip_towers_score_by_cosine(tiny_towers: Path) -> None:
    assert TowersSpec.read(tiny_towers).score.kind == "cosine"
    assert TowersSpec.read(tiny_towers).tokenizer is None


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from indexer.locations import data_dir

    open_clip.add_model_config(data_dir() / "model_configs" / "photoseek-tiny.json")
    torch.manual_seed(0)
    model = open_clip.create_model("photoseek-tiny")
    return export_towers(model, tmp_path_factory.mktemp("clip"))


def test_hf_query_runs_without_torch(family) -> None:
    _, _, towers = family
    assert_runs_without_torch(
        "import search.encoders.towers as t\n"
        f"assert t.TextEncoder({str(towers)!r}).encode(['東京の桜 🌅']).shape[0] == 1\n"
    )


def test_clip_query_never_imports_tokenizers(tiny_towers: Path) -> None:
    """The `tokenizers` import is for Hugging Face towers only: CLIP's cold query skips it."""
    assert_runs_without_torch(
        "import sys, search.encoders.towers as t\n"
        f"t.TextEncoder({str(tiny_towers)!r}).encode(['a dog'])\n"
        "assert 'tokenizers' not in sys.modules and 'transformers' not in sys.modules\n"
    )


def test_export_needs_the_tokenizer_of_a_non_clip_vocabulary(family, tmp_path: Path) -> None:
    model, tokenizer, _ = family
    if tokenizer.tokenizer.backend_tokenizer.get_vocab_size() == 49408:
        pytest.skip("same size as CLIP's vocabulary")
    with pytest.raises(BadModelSpec, match="no Hugging Face tokenizer"):
        export_towers(model, tmp_path)


def test_tampered_tokenizer_settings_are_refused(family, tmp_path: Path) -> None:
    _, _, towers = family
    spec = json.loads((towers / TOWERS_FILE).read_text())
    for field, value in [("clean", "shout"), ("padding_side", "middle"), ("file", "../x.json")]:
        tampered = {**spec, "tokenizer": {**spec["tokenizer"], field: value}}
        (tmp_path / TOWERS_FILE).write_text(json.dumps(tampered))
        with pytest.raises(IndexNotFound, match=field.replace("file", "tokenizer_file")):
            TowersSpec.read(tmp_path)


def _engine_over(towers: Path, directory: Path, dim: int) -> tuple[Engine, np.ndarray]:
    """A real catalog + FAISS index of random unit vectors, with `towers` as its encoders."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    directory.mkdir()
    catalog = Catalog.open(directory)
    catalog.write_batch([NewImage(f"{i}.jpg".encode(), 1, 1, bytes([i]) * 16, vector=v)
                         for i, v in enumerate(vectors)])  # fmt: skip
    record = ModelRecord(ModelIdentity("test", "test", "none"), dim, 32)
    catalog.set_meta("model", record.to_json())
    store, _ = sync(VectorStore.empty(dim), catalog)
    store.save(directory)
    (directory / TOWERS_DIR).symlink_to(towers, target_is_directory=True)
    engine = Engine.open(directory)
    engine.knn = brute_force_knn(catalog, dim)
    return engine, vectors


def test_sigmoid_model_reports_match_probabilities(tmp_path: Path) -> None:
    model, tokenizer = _built("siglip2", tmp_path / "model")
    towers = export_towers(model, tmp_path / "towers", tokenizer=tokenizer)
    engine, vectors = _engine_over(towers, tmp_path / "index", TowersSpec.read(towers).embed_dim)
    query = TextEncoder(towers).encode("a dog")[0]
    scale, bias = float(model.logit_scale.detach().exp()), float(model.logit_bias.detach())
    with engine:
        hits = engine.search([Term(text="a dog")], k=6)
        for hit in hits:
            cosine = float(vectors[int(hit.path.split(b".")[0])] @ query)
            assert hit.extra["cosine"] == pytest.approx(cosine, abs=1e-5)
            assert hit.score == pytest.approx(1 / (1 + math.exp(-(scale * cosine + bias))))
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        middle = hits[2].score
        kept = engine.search([Term(text="a dog")], k=6, threshold=middle)
        assert [h.id for h in kept] == [h.id for h in hits[:3]]
        # Arithmetic has no calibrated probability: it stays a cosine.
        mixed = engine.search([Term(text="a dog"), Term(text="sea", weight=-1.0)], k=6)
        assert all("cosine" not in h.extra and -1 <= h.score <= 1 for h in mixed)


def _built(name: str, folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of one family, built under folder."""
    model_name = build(next(f for f in FAMILIES if f.name == name), folder)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained_text=False).eval()
    return model, open_clip.get_tokenizer(model_name)


def test_export_refuses_a_tokenizer_with_ids_the_model_lacks(tmp_path: Path) -> None:
    small, _ = _built("worldwide", tmp_path / "small")
    _, large = _built("siglip2", tmp_path / "large")
    with pytest.raises(BadModelSpec, match="text tower embeds only"):
        export_towers(small, tmp_path / "towers", tokenizer=large)


def test_export_refuses_open_clips_clips_tokenizer_mode(tmp_path: Path) -> None:
    from open_clip.tokenizer import HFTokenizer

    model, _ = _built("clipa", tmp_path)
    clips = HFTokenizer(str(tmp_path / "tokenizer"), context_length=16, tokenizer_mode="clips")
    with pytest.raises(BadModelSpec, match="'clips' tokenizer mode"):
        export_towers(model, tmp_path / "towers", tokenizer=clips)


def test_named_files_are_the_files_an_export_uses(family) -> None:
    _, _, towers = family
    spec = TowersSpec.read(towers)
    names = spec.named_files()
    assert "vocab_file" not in names and names["tokenizer_file"] == spec.tokenizer.file
    for name in names.values():
        assert (towers / name).is_file()
