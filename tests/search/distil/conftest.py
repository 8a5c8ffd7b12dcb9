"""Shared by the distillation tests: a small indexed gallery, a tiny random BLIP teacher saved
to a folder (built by the rerank tests' own `tiny_hf`), and texts in its vocabulary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import REPO, photo_folder
from indexer.pipeline import IndexOptions, run_index

# Texts made of the tiny BLIP tokenizer's words; with their edits, 15 texts.
TEXTS = [
    "a red circle", "a blue square", "a green triangle on a red square", "a small dog",
    "a big cat", "the photo of a cat", "a blue circle and a green square",
    "a red dog on the square", "an old photo", "a small red triangle",
]  # fmt: skip


def _tiny_hf():  # noqa: ANN202 - the module
    spec = importlib.util.spec_from_file_location(
        "tiny_hf", REPO / "tests" / "search" / "rerank" / "tiny_hf.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def blip_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return _tiny_hf().build("blip", tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="session")
def distil_gallery(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: str, towers_cache):
    """(index, photos, texts file): 16 noise photos indexed with the tiny open_clip."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(towers_cache))
        root = tmp_path_factory.mktemp("distil")
        photos = photo_folder(root, 16)
        index = root / "index"
        run_index(index, IndexOptions(roots=(photos,), model=tiny_checkpoint))
        texts = root / "texts.txt"
        texts.write_text("\n".join(TEXTS) + "\n")
        return index, photos, texts
