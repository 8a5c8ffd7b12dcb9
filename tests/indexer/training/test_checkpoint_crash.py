"""Kill a real `photoseek train` process with SIGKILL as it saves its checkpoint; the same
command run again resumes and finishes, and the result matches an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import torch

from helpers import PHOTOSEEK
from indexer.datasets.shapes_world import write_dataset
from indexer.training.checkpoints import STATE_FILE

# The child kills itself when the second epoch's checkpoint is about to be renamed into place:
# the new state fully written beside it, the first epoch's state still the one on disk.
KILL_AT_SECOND_SAVE = """
import os, signal
_replace, _seen = os.replace, []
def _replace_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == {name!r}:
        _seen.append(dst)
        if len(_seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = _replace_or_die
from search.cli import main
main()
"""


def _train_args(pairs: Path, out: Path) -> list[str]:
    return ["train", "--pairs", str(pairs), "--out", str(out), "--epochs", "3",
            "--batch-size", "16", "--seed", "0", "--quiet"]  # fmt: skip


def test_sigkill_while_saving_the_checkpoint_loses_at_most_one_epoch(tmp_path: Path) -> None:
    files = write_dataset(tmp_path / "data", train_groups=6, test_groups=1, size=32, seed=0)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    script = KILL_AT_SECOND_SAVE.format(name=STATE_FILE)
    args = _train_args(files.train_jsonl, killed)
    result = subprocess.run([PHOTOSEEK[0], "-c", script, *args], capture_output=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    state = torch.load(killed / STATE_FILE, weights_only=True)
    assert state["epoch"] == 1  # the first epoch's state, whole; the second's never replaced it

    resumed = subprocess.run([*PHOTOSEEK, *args], capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert not [n for n in os.listdir(killed) if n.endswith(".tmp")]  # the killed save's file
    subprocess.run(
        [*PHOTOSEEK, *_train_args(files.train_jsonl, whole)], capture_output=True, timeout=600,
        check=True,
    )  # fmt: skip
    fingerprint = [
        json.loads((folder / "itm_head.json").read_text())["encoder_fingerprint"]
        for folder in (killed, whole)
    ]
    assert fingerprint[0] == fingerprint[1]  # same arguments and seed, same weights
