"""Exports that run in a short-lived child process, so the indexer never holds their peak.

Tracing a ViT-B-32 to ONNX holds the model, a float32 copy of it, the traced graph and its
serialised protobuf at once, and quantising the image engine holds the graph several times
over: each took the indexer past 3 GB. The allocator keeps much of that mapped after it is
freed, so an indexer that exported in-process carried the peak through the rest of its run.
A child that loads the model itself, writes the export and exits hands all of it back.

The child writes into a folder its parent names and owns; the parent then checks and installs
what it wrote (the manifest, the lock and the atomic swap stay the parent's), so a child that
dies part way leaves nothing a reader could use. Progress and a typed error come back as JSON
lines on the child's stdout (`indexer.towers.export_job` is the child's side).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer import errors
from indexer.errors import PhotoseekError
from indexer.progress import Progress

TOWERS, GRAPH, QUANTISE = "towers", "graph", "quantise"  # the jobs `export_job` runs


class ExportFailed(PhotoseekError):
    """An export's child process died without saying why (killed, out of memory, a crash)."""


def export_towers_in_child(
    spec: str, work: Path, progress: Callable[[Progress], None] | None = None
) -> None:
    """Export the query towers of the model `spec` names (both towers, float32, on the CPU)
    into the new folder `work`."""
    job = {"job": TOWERS, "spec": spec, "folder": str(work)}
    run_in_child(job, "exporting the query towers", progress)


def run_in_child(
    job: dict[str, str], what: str, progress: Callable[[Progress], None] | None = None
) -> dict[str, Any]:
    """Run `job` in a child and wait for it: its result, else its typed error or ExportFailed.
    `what` names the job in the error."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the folder that holds `indexer`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "indexer.towers.export_job", json.dumps(job)]
    said: dict[str, Any] = {}
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=env,
        )  # fmt: skip
        with child:
            for line in child.stdout or ():
                message = _message(line)
                if "step" in message and progress:
                    done, total = message["step"]
                    progress(Progress("exporting", done, total, "steps", message["note"]))
                said.update(message)
        if child.returncode == 0:
            return dict(said.get("result") or {})
        stderr.seek(0)
        last = [line.strip() for line in stderr if line.strip()][-1:]
    if "error" in said:
        raise _typed(said["error"])(said["message"])
    how = _how(child.returncode)
    raise ExportFailed(f"{what} failed: its process {how}" + (f" ({last[0]})" if last else ""))


def _message(line: str) -> dict[str, Any]:
    """One JSON line from the child; anything else a library printed there is ignored."""
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _typed(name: str) -> type[PhotoseekError]:
    """The error class the child raised, or the base class for a name this side lacks."""
    kind = getattr(errors, name, None)
    return kind if isinstance(kind, type) and issubclass(kind, PhotoseekError) else PhotoseekError


def _how(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " - out of memory?" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {returncode}"
