"""The child process's side of `indexer.towers.child_export`: one export, then exit.

Run as `python -m indexer.towers.export_job JOB`, JOB a JSON object; it writes JSON lines on
stdout: progress steps, and a `PhotoseekError` as its class name and message (exit status 2).
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys
from pathlib import Path
from typing import Any

from indexer.errors import PhotoseekError
from indexer.towers.child_export import GRAPH, TOWERS


def _say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def _towers(spec: str, folder: Path) -> None:
    from indexer.models.loading import ModelSpec, load_model
    from indexer.towers.export import export_towers

    _say(step=(0, 2), note="loading the model")
    # Float32 weights as stored, not those rounded for indexing: queries embed at full precision.
    loaded = load_model(ModelSpec.parse(spec), "fp32", "cpu")
    _say(step=(1, 2), note="exporting the query towers")
    export_towers(
        loaded.model, folder, loaded.head, loaded.head_alpha, loaded.tokenizer, owned=True
    )
    _say(step=(2, 2), note="")


def _graph(spec: str, target: Path) -> None:
    from indexer.models.loading import ModelSpec, load_model
    from indexer.towers.image_engine import export_graph

    loaded = load_model(ModelSpec.parse(spec), "fp32", "cpu", "image")
    _say(result=export_graph(loaded, target))


def _die_with_parent() -> None:
    """On Linux, end with the parent: an export nobody waits for only holds memory (its
    parent's next install deletes the folder it writes)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str]) -> int:
    _die_with_parent()
    job = json.loads(argv[1])
    try:
        if job["job"] == TOWERS:
            _towers(job["spec"], Path(job["folder"]))
        elif job["job"] == GRAPH:
            _graph(job["spec"], Path(job["target"]))
        else:
            from indexer.towers.image_engine import quantise_graph  # without torch

            quantise_graph(Path(job["source"]), Path(job["target"]))
    except PhotoseekError as e:
        _say(error=type(e).__name__, message=str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
