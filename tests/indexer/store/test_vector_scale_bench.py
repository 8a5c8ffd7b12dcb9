"""The scale benchmark's data file: a run killed while writing it resumes to the same bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "vector_scale.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("vector_scale_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CHUNK", 500)  # small chunks: the same code path, fast
    return module


def test_a_killed_data_run_resumes_where_it_stopped(bench, tmp_path, monkeypatch):
    whole = np.load(bench.ensure_data(tmp_path / "whole", 2200, 3))
    real = bench.chunk_vectors
    made: list[int] = []

    def dies_at_chunk_three(params, seed, number, size):  # noqa: ANN001, ANN202
        if number == 3:
            raise KeyboardInterrupt  # as a kill between two chunks
        made.append(number)
        return real(params, seed, number, size)

    monkeypatch.setattr(bench, "chunk_vectors", dies_at_chunk_three)
    with pytest.raises(KeyboardInterrupt):
        bench.ensure_data(tmp_path / "killed", 2200, 3)
    assert not (tmp_path / "killed" / "vectors-v2-2200-3.f16").exists()  # never a half file
    monkeypatch.setattr(bench, "chunk_vectors", real)
    made.clear()
    monkeypatch.setattr(bench, "chunk_vectors", lambda *a: (made.append(a[2]), real(*a))[1])
    resumed = np.load(bench.ensure_data(tmp_path / "killed", 2200, 3))
    assert made == [3, 4]  # only the chunks not yet written
    assert resumed.tobytes() == whole.tobytes()
    assert [p.name for p in (tmp_path / "killed").iterdir()] == ["vectors-v2-2200-3.f16"]


def test_a_built_index_is_tuned_again_and_saved_without_a_rebuild(bench, tmp_path, monkeypatch):
    from indexer.store import vector_store
    from indexer.store.vector_store import VectorStore

    monkeypatch.setattr(vector_store, "EXACT_LIMIT", 1000)  # an inverted file at 3,000
    data_path = bench.ensure_data(tmp_path, 3000, 0)
    index_dir = tmp_path / "index"
    built = bench.build(data_path, index_dir, None)
    tuned = built["record"]["nprobe"]
    assert built["record"]["recall"] >= 0.95 and built["record"]["recall_se"] > 0
    store = VectorStore.load(index_dir, bench.DIM, mmap=False)
    store.set_search(1, 0, 0)  # settings far below the target, saved
    store.save(index_dir)
    inode = (index_dir / "vectors.faiss").stat().st_ino
    again = bench.retune_saved(data_path, index_dir)
    assert again["record"]["nprobe"] == tuned and "retune_s" in again["retuned"]
    assert json.loads((index_dir / "build.json").read_text()) == again
    assert VectorStore.load(index_dir, bench.DIM).nprobe == tuned
    assert (index_dir / "vectors.faiss").stat().st_ino != inode  # written again, atomically
