"""Kill a real `photoseek index` process with SIGKILL mid-run; the next run completes the job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from helpers import PHOTOSEEK, consistency, photo_folder, write_image
from search.query import Term
from search.wiring import build_engine


def committed_rows(catalog: Path) -> int:
    if not catalog.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.parametrize("kill_after", [3, 40])
def test_sigkill_mid_run_then_resume(tmp_path, tiny_checkpoint, kill_after):
    total = 90
    root = photo_folder(tmp_path, total, size=(160, 120))
    idx = tmp_path / "idx"
    args = [
        *PHOTOSEEK,
        "index",
        str(root),
        "--index",
        str(idx),
        "--model",
        tiny_checkpoint,
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--json",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while committed_rows(idx / "catalog.sqlite") < kill_after and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = committed_rows(idx / "catalog.sqlite")
    assert kill_after <= survived < total

    rerun = subprocess.run(args, capture_output=True, timeout=300, check=True)
    summary = json.loads(rerun.stdout)
    assert summary["added"] == total - survived  # nothing embedded twice, nothing lost
    assert summary["errors"] == 0
    _, live = consistency(idx)
    assert len(live) == total
    assert not any(name.endswith(".tmp") for name in os.listdir(idx))


# A real SIGKILL at an exact point: the child replaces os.replace with one that kills the process
# when a rename onto `name` is about to happen (the file beside it fully written, not yet in place).
KILL_BEFORE_RENAME = """
import os, signal
_replace = os.replace
def _replace_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == {name!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = _replace_or_die
from search.cli import main
main()
"""


def index_args(root: Path, idx: Path, model: str) -> list[str]:
    return ["index", str(root), "--index", str(idx), "--model", model, "--batch-size", "4",
            "--workers", "1", "--json"]  # fmt: skip


def killed_at(name: str, args: list[str]) -> None:
    script = KILL_BEFORE_RENAME.format(name=name)
    result = subprocess.run([PHOTOSEEK[0], "-c", script, *args], capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()


def searchable(idx: Path) -> None:
    with build_engine(idx) as engine:
        hits = engine.search([Term(text="a photo")], k=100)
        assert {h.id for h in hits} == set(engine.catalog.live_ids().tolist())


@pytest.mark.parametrize("name", ["vectors.faiss", "vectors.json", "towers"])
def test_sigkill_while_saving_vectors_or_installing_towers(tmp_path, tiny_checkpoint, name):
    root, idx = photo_folder(tmp_path, 20, seed=300), tmp_path / "idx"
    args = index_args(root, idx, tiny_checkpoint)
    killed_at(name, args)
    if name != "towers":  # every batch committed, only the vector file (or its record) behind
        assert committed_rows(idx / "catalog.sqlite") == 20
        searchable(idx)  # a search meanwhile reads the file it finds, plus the catalog
    rerun = subprocess.run([*PHOTOSEEK, *args], capture_output=True, timeout=300, check=True)
    assert json.loads(rerun.stdout)["added"] == (20 if name == "towers" else 0)
    _, live = consistency(idx)
    assert len(live) == 20
    searchable(idx)
    # The killed save's temporary file is cleared (it is as large as the index).
    assert not [n for n in os.listdir(idx) if n.startswith(".vectors.")]


def test_sigkill_while_saving_a_changed_index(tmp_path, tiny_checkpoint):
    root, idx = photo_folder(tmp_path, 12, seed=400), tmp_path / "idx"
    args = index_args(root, idx, tiny_checkpoint)
    subprocess.run([*PHOTOSEEK, *args], capture_output=True, timeout=300, check=True)
    for i in range(4):
        (root / f"p{i:03d}.png").unlink()
        write_image(root / f"new{i}.png", seed=500 + i)
    killed_at("vectors.faiss", args)  # the old file stays: 4 stale ids, 4 rows it lacks
    searchable(idx)
    subprocess.run([*PHOTOSEEK, *args], capture_output=True, timeout=300, check=True)
    _, live = consistency(idx)
    assert len(live) == 12
    searchable(idx)
