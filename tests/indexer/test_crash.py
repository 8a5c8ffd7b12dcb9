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

from helpers import PHOTOSEEK, consistency, write_image


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
    root = tmp_path / "photos"
    root.mkdir()
    total = 90
    for i in range(total):
        write_image(root / f"p{i:03d}.png", seed=i, size=(160, 120))
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
