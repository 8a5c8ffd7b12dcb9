"""The text tower's graph as onnxruntime optimises it, saved once beside an index's towers.

Every session onnxruntime builds optimises its graph first (fusing attention, layer norms,
GELU), which costs a cold query ~0.1 s of ViT-B's text tower; the writer saves the result once
and a query loads that with optimisation off. Saved at the `extended` level, which adds no
layouts specific to this CPU, so an index copied to another machine can still use it. It lives
in `optimised/`, named after the tower it was made from (so towers re-exported later never
meet an older graph), written in a folder of its own and renamed into place whole.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from indexer.atomic import fsync_dir, fsync_file
from indexer.towers.spec import TowersSpec

log = logging.getLogger(__name__)

OPTIMISED_DIR = "optimised"
_WORK_MARK = f"{OPTIMISED_DIR}.new-"


def optimised_path(towers: Path, tower_file: str) -> Path:
    """Where the optimised graph of `tower_file` in the towers folder `towers` is saved."""
    return towers / OPTIMISED_DIR / tower_file


def save_optimised(towers: Path) -> bool:
    """Save the optimised text tower into the towers folder unless it is there; only for the
    index's writer (it holds the lock). Returns whether one was written. It only speeds cold
    queries up, so a failure to save it is a warning: queries then optimise the tower itself."""
    tower_file = TowersSpec.read(towers).text_file
    target = optimised_path(towers, tower_file)
    for leftover in towers.glob(f"{_WORK_MARK}*"):  # from a writer killed part way
        shutil.rmtree(leftover, ignore_errors=True)
    if target.is_file():
        return False
    try:
        _save(towers, tower_file, target)
    except Exception as e:  # noqa: BLE001 - OSError, or onnxruntime's (they derive from Exception)
        log.warning("could not save the optimised text tower in %s: %s", target.parent, e)
        return False
    log.info("saved the optimised text tower in %s", target.parent)
    return True


def _save(towers: Path, tower_file: str, target: Path) -> None:
    """Make the graph in a folder of its own, then rename that into place whole."""
    import onnxruntime  # only the writer that saves a graph pays for it here

    work = towers / f"{_WORK_MARK}{uuid.uuid4().hex}"
    work.mkdir()
    try:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(work / tower_file)
        # The weights beside the graph, as in the export: a protobuf holds at most 2 GB.
        config = {"file_name": f"{tower_file}.data", "min_size_in_bytes": "1024"}
        for key, value in config.items():
            options.add_session_config_entry(
                f"session.optimized_model_external_initializers_{key}", value
            )
        onnxruntime.InferenceSession(
            str(towers / tower_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        for path in work.iterdir():
            fsync_file(path)
        shutil.rmtree(target.parent, ignore_errors=True)  # an older tower's graph
        os.replace(work, target.parent)
        fsync_dir(towers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
