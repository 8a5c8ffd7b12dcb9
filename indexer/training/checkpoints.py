"""The train state rewritten after every epoch, from which an interrupted run resumes.

The state is plain data (dicts, lists, numbers, strings, tensors), so it loads with
``torch.load(weights_only=True)``: a crafted `train_state.pt` in an out_dir cannot run code.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from indexer.atomic import remove_leftovers, replacing
from indexer.errors import BadInput

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"


def resume(
    path: Path,
    setup: dict[str, Any],
    clip: nn.Module,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Load an unfinished run's state; the epoch to start from (0 when there is none)."""
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(
            f"{path}: not a plain train state ({reason}); delete it to start the run over"
        ) from None
    if state["setup"] != setup:
        raise BadInput(f"{path.parent} holds a run with other settings; use another out_dir")
    clip.load_state_dict(state["model"])
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming %s at epoch %d", path.parent, state["epoch"])
    return int(state["epoch"])


def save_state(
    path: Path,
    setup: dict[str, Any],
    epoch: int,
    clip: nn.Module,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Write the state after `epoch` epochs; an interrupted save leaves the previous one intact."""
    state = {
        "setup": setup,
        "epoch": epoch,
        "model": clip.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    remove_leftovers(path)  # a save killed before its rename left its temporary file
    with replacing(path) as tmp:
        torch.save(state, tmp)
