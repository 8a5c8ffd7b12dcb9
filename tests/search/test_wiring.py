"""`build_engine`: an index directory wired to its encoders, checked against its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY, assert_runs_without_torch
from indexer.errors import ModelMismatch
from indexer.pipeline import IndexOptions, run_index
from search.query import Term
from search.wiring import Preload, build_engine


@pytest.fixture
def index(tmp_path: Path, photos: Path, tiny_checkpoint: str) -> Path:
    directory = tmp_path / "idx"
    run_index(directory, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    return directory


def test_preload_follows_the_query_terms():
    terms = [Term(text="a dog"), Term(image=b"/photos/cat.jpg", weight=-1.0)]
    assert Preload.for_terms(terms) == Preload(text=True, image=True, head=False)
    assert Preload.for_terms(terms[:1], rerank=True) == Preload(text=True, head=True)


def test_index_dir_from_the_environment(index, monkeypatch):
    monkeypatch.setenv("PHOTOSEEK_INDEX", str(index))
    with build_engine() as engine:
        assert engine.directory == index


def test_another_model_is_refused(index, tmp_path, tiny_checkpoint):
    other = tmp_path / "other.pt"
    other.write_bytes(Path(tiny_checkpoint.split(":", 1)[1]).read_bytes() + b"\0")
    with pytest.raises(ModelMismatch, match="built with"):
        build_engine(index, model=f"{TINY}:{other}")


def test_a_preloaded_cold_query_never_imports_torch(index, tiny_checkpoint):
    assert_runs_without_torch(
        "from search.query import parse_terms\n"
        "from search.wiring import Preload, build_engine\n"
        "terms = parse_terms(['a dog'])\n"
        f"with build_engine({str(index)!r}, preload=Preload.for_terms(terms),\n"
        f"                  model={tiny_checkpoint!r}) as engine:\n"
        "    assert len(engine.search(terms, k=3)) == 3\n"
    )
