"""The optimised text tower is made once per user and model, and copied into each new index."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

from indexer.locations import TOWERS_DIR
from indexer.pipeline import IndexOptions, run_index
from indexer.towers.install import cache_root
from indexer.towers.optimised import optimised_path
from indexer.towers.spec import TowersSpec


def _graph(index: Path) -> Path:
    towers = index / TOWERS_DIR
    return optimised_path(towers, TowersSpec.read(towers).text_file)


def test_a_new_index_copies_the_cached_graph(tmp_path: Path, photos: Path, tiny_checkpoint: str):
    run_index(tmp_path / "first", IndexOptions(roots=(photos,), model=tiny_checkpoint))
    graph = _graph(tmp_path / "first")
    cached = [optimised_path(p, graph.name) for p in cache_root().iterdir() if p.is_dir()]
    made = [c for c in cached if c.is_file() and filecmp.cmp(graph, c, shallow=False)]
    assert len(made) == 1  # made in the cache: no session of this index's own made it
    assert not os.path.samefile(graph, made[0])  # a copy, not the cache's file
    graph.write_bytes(b"damaged")  # one index's copy damaged: the cache and later indexes keep
    run_index(tmp_path / "second", IndexOptions(roots=(photos,), model=tiny_checkpoint))
    assert filecmp.cmp(_graph(tmp_path / "second"), made[0], shallow=False)
    assert made[0].read_bytes() != b"damaged"
