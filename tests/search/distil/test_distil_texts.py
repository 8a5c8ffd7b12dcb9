"""The text pool and its hard-negative edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.errors import BadInput
from search.distil.texts import edits, read_texts, text_pool, vocabulary_texts
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
