"""The optimised text tower is made once per user and model, and linked into each new index."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.locations import TOWERS_DIR
from indexer.pipeline import IndexOptions, run_index
from indexer.towers.install import cache_root
from indexer.towers.optimised import optimised_path
from indexer.towers.spec import TowersSpec


def test_a_new_index_links_the_cached_graph(tmp_path: Path, photos: Path, tiny_checkpoint: str):
    for name in ("first", "second"):
        run_index(tmp_path / name, IndexOptions(roots=(photos,), model=tiny_checkpoint))
    towers = tmp_path / "second" / TOWERS_DIR
    graph = optimised_path(towers, TowersSpec.read(towers).text_file)
    cached = [optimised_path(p, graph.name) for p in cache_root().iterdir() if p.is_dir()]
    linked = [c for c in cached if c.is_file() and os.path.samefile(graph, c)]
    assert len(linked) == 1  # linked from the cache: no session of this index made it
    assert os.path.samefile(f"{graph}.data", f"{linked[0]}.data")
