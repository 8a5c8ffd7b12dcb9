"""The text pool and its hard-negative edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.errors import BadInput
from search.distil.texts import edits, read_texts, text_pool, vocabulary_texts, with_captions
from search.tools.describe import vocabulary


def test_shapes_captions_get_their_twins():
    assert edits("a red circle left of a blue square") == [
        "a blue circle left of a red square",
        "a blue square left of a red circle",
        "a red square left of a blue circle",
    ]


def test_other_texts_get_attribute_and_relation_swaps():
    assert edits("a red car next to a blue bike") == [
        "a blue car next to a red bike",
        "a blue bike next to a red car",
    ]
    assert edits("a photo of a dog on a sofa.") == ["a photo of a sofa on a dog."]
    assert edits("a photo of a dog.") == []


def test_the_default_pool_is_the_vocabulary_in_its_templates():
    concepts, templates = vocabulary("photo")
    pool = text_pool(None)
    assert pool == vocabulary_texts()
    assert len(pool) == len(concepts) * len(templates)
    assert templates[0].replace("{}", concepts[0]) == pool[0]


def test_a_texts_file(tmp_path: Path):
    path = tmp_path / "texts.txt"
    path.write_text("# mine\na dog\n\na cat\na dog\n")
    assert read_texts(path) == ["a dog", "a cat"]
    path.write_text("\n# nothing\n")
    with pytest.raises(BadInput, match="holds no texts"):
        read_texts(path)
    with pytest.raises(BadInput, match="cannot read texts"):
        read_texts(tmp_path / "missing.txt")


def test_the_pool_adds_the_captions_stored_for_the_photos(tmp_path: Path):
    path = tmp_path / "texts.txt"
    path.write_text("a dog\na cat\n")
    pool = with_captions(text_pool(path), ["a cat", " a red kite ", ""])
    assert pool == ["a dog", "a cat", "a red kite"]


def test_a_distillation_scores_the_index_captions_too(
    tmp_path: Path, tiny_checkpoint: str, towers_cache: Path, blip_teacher: Path, monkeypatch
):
    from helpers import photo_folder
    from indexer.pipeline import IndexOptions, run_index
    from indexer.store import keywords
    from indexer.store.catalog import Catalog
    from search.distil.run import DistilSettings, teacher_scores

    monkeypatch.setenv("XDG_CACHE_HOME", str(towers_cache))
    index = tmp_path / "index"
    run_index(index, IndexOptions(roots=(photo_folder(tmp_path, 3),), model=tiny_checkpoint))
    catalog = Catalog.open(index)
    try:  # as `photoseek index --captions` records them
        keywords.fill_names(catalog.engine, catalog.root_paths())
        first = int(catalog.live_ids()[0])
        keywords.store_captions(catalog.engine, "test", [
            keywords.CaptionResult(first, "a red circle on a blue square")])  # fmt: skip
    finally:
        catalog.close()
    texts = tmp_path / "texts.txt"
    texts.write_text("a small dog\n")
    settings = DistilSettings(texts_file=texts, rerank_k=2)
    scored, _ = teacher_scores(index, str(blip_teacher), tmp_path / "out", settings)
    asked = {pool.text for pool in scored.pools}
    assert {"a small dog", "a red circle on a blue square"} <= asked
