"""The optimiser of a run and its learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from indexer.training.options import TrainOptions


def build_optimizer(clip: nn.Module, head: nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW over the trainable weights of both; 1-d ones (biases, norms, the logit scale) get
    no weight decay, and the head's groups carry `head_lr_scale` as "lr_scale"."""
    groups: list[dict[str, Any]] = []
    for module, scale in ((clip, 1.0), (head, options.head_lr_scale)):
        params = [p for p in module.parameters() if p.requires_grad]
        groups += [
            {
                "params": [p for p in params if p.ndim >= 2],
                "weight_decay": options.weight_decay,
                "lr_scale": scale,
            },
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale},
        ]
    return torch.optim.AdamW(groups, lr=options.lr)


def set_learning_rate(
    optimizer: torch.optim.Optimizer, step: int, total: int, options: TrainOptions
) -> None:
    """Set each parameter group's rate for `step` of `total`, scaled by its "lr_scale"."""
    for group in optimizer.param_groups:
        group["lr"] = _lr(step, total, options) * group["lr_scale"]


def _lr(step: int, total: int, options: TrainOptions) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    progress = (step - options.warmup_steps) / max(1, total - options.warmup_steps)
    return options.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
