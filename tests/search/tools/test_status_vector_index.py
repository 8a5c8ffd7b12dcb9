"""`photoseek status` reports how the vector index was chosen and tuned; `--max-index-memory`."""

from __future__ import annotations

import json

from helpers import assert_one_line_error, run
from search.cli.index_cmds import _vector_index_line


def test_status_reports_the_vector_index_and_the_budget_is_checked(
    tmp_path, photos, tiny_checkpoint
):
    idx = str(tmp_path / "idx")
    bad = run("index", str(photos), "--index", idx, "--max-index-memory", "lots")
    assert_one_line_error(bad, "--max-index-memory")
    done = run(
        "index",
        str(photos),
        "--index",
        idx,
        "--model",
        tiny_checkpoint,
        "--max-index-memory",
        "64M",
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(run("status", "--index", idx, "--json").stdout)
    assert status["vector_index"] == {
        "factory": "IDMap2,Flat",
        "trained_for": 0,  # exact search trains nothing
        "nprobe": 0,
        "ef_search": 0,
        "refine": 0,
        "recall": None,
        "recall_se": None,
    }
    assert "vectors  IDMap2,Flat (exact search)" in run("status", "--index", idx).stdout


def test_the_status_line_of_a_tuned_index():
    built = {
        "factory": "OPQ128,IVF16384_HNSW32,PQ128",
        "trained_for": 10_000_000,
        "nprobe": 64,
        "ef_search": 128,
        "refine": 8,
        "recall": 0.9612,
    }
    assert _vector_index_line(built) == (
        "OPQ128,IVF16384_HNSW32,PQ128 trained on 10000000, nprobe 64, efSearch 128, "
        "exact re-scoring of 8x k, recall@10 0.961 at build"
    )  # a record from before the standard error was kept
    assert _vector_index_line({**built, "recall_se": 0.0036}).endswith(
        "recall@10 0.961 ± 0.004 at build"
    )
