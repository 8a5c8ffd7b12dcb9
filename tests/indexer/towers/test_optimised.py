"""The text tower's optimised graph: saved once by the indexer, used by one-query encoders with
the same embeddings, and never in the way when it is damaged or half made."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from helpers import write_image
from indexer.locations import TOWERS_DIR
from indexer.pipeline import IndexOptions, run_index
from indexer.towers.optimised import OPTIMISED_DIR, optimised_path, save_optimised
from indexer.towers.spec import TowersSpec
from search.encoders.towers import TextEncoder

TEXTS = ["a red square", "two blue circles on a beach at night", ""]


@pytest.fixture
def towers(tmp_path: Path, photos: Path, tiny_checkpoint: str) -> Path:
    run_index(tmp_path / "idx", IndexOptions(roots=(photos,), model=tiny_checkpoint))
    return tmp_path / "idx" / TOWERS_DIR


def graph(towers: Path) -> Path:
    return optimised_path(towers, TowersSpec.read(towers).text_file)


def test_the_indexer_saves_it_once_and_a_cold_encoder_embeds_the_same(towers):
    assert graph(towers).is_file() and Path(f"{graph(towers)}.data").is_file()
    (towers / f"{OPTIMISED_DIR}.new-killed").mkdir()  # a writer killed part way
    assert not save_optimised(towers)
    assert sorted(p.name for p in towers.iterdir() if p.name.startswith(OPTIMISED_DIR)) == [
        OPTIMISED_DIR
    ]
    usual = TextEncoder(towers).encode(TEXTS)
    once = TextEncoder(towers, once=True).encode(TEXTS)
    np.testing.assert_allclose(once, usual, atol=1e-6)
    assert np.abs(once @ usual.T - usual @ usual.T).max() <= 1e-6


def test_a_damaged_graph_is_passed_over_for_the_tower_itself(towers, caplog):
    usual = TextEncoder(towers).encode(TEXTS)
    graph(towers).write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING):
        once = TextEncoder(towers, once=True).encode(TEXTS)
    np.testing.assert_allclose(once, usual, atol=1e-6)
    assert "unusable" in caplog.text


def test_towers_without_one_get_it_at_the_next_index_run(towers, tmp_path, photos, tiny_checkpoint):
    optimised = graph(towers).parent
    for path in optimised.iterdir():
        path.unlink()
    optimised.rmdir()
    np.testing.assert_allclose(
        TextEncoder(towers, once=True).encode(TEXTS), TextEncoder(towers).encode(TEXTS), atol=1e-6
    )  # meanwhile the tower itself, optimised on load
    run_index(tmp_path / "idx", IndexOptions(roots=(photos,), model=tiny_checkpoint))
    assert graph(towers).is_file()


def test_a_graph_that_cannot_be_saved_is_a_warning_and_queries_still_work(
    towers, tmp_path, photos, tiny_checkpoint, caplog
):
    optimised = graph(towers).parent
    for path in optimised.iterdir():
        path.unlink()
    optimised.rmdir()
    optimised.write_text("a file where the folder goes")  # the rename into place fails
    write_image(photos / "later.jpg", seed=50)
    with caplog.at_level(logging.WARNING):
        summary = run_index(tmp_path / "idx", IndexOptions(roots=(photos,), model=tiny_checkpoint))
    assert summary.added == 1 and "could not save the optimised text tower" in caplog.text
    assert not graph(towers).exists()
    assert not [p for p in towers.iterdir() if p.name.startswith(f"{OPTIMISED_DIR}.new-")]
    np.testing.assert_allclose(
        TextEncoder(towers, once=True).encode(TEXTS), TextEncoder(towers).encode(TEXTS), atol=1e-6
    )
