"""The settings of a training run besides its data, model, epochs, seed and batch size."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainOptions:
    """Everything about a run besides the data, model, epochs, seed and batch size."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    itm_weight: float = 1.0  # 0: ITC alone, a plain dual encoder (the head stays untrained)
    # Listwise ITM: each caption's softmax over its group's images (and each image's over the
    # group's captions), added to the BCE with this weight; it trains what twin accuracy reads.
    twin_listwise: float = 0.0
    # Share of the ITM gradient that reaches the towers (1: all, 0: ITC alone shapes them).
    itm_tower_grad: float = 1.0
    # Whether the other members of a pair's group are negatives in the contrastive loss. Off,
    # ITC stays a bag-of-words retriever and only the head learns what tells twins apart.
    itc_group_negatives: bool = True
    # Box supervision of the head's cross-attention (`grounding`): needs boxes with the pairs.
    ground_weight: float = 0.0
    head_lr_scale: float = 1.0  # the head's learning rate relative to the towers'
    init_logit_scale: float = math.log(30)  # from-scratch models; CLIP's 1/0.07 learns slower
    head: dict[str, Any] = field(default_factory=dict)  # ItmConfig overrides
    held_out: float = 0.05  # fraction of pairs (at most 1,000) kept to pick alpha and calibrate
    rerank_k: int = 16  # candidates the held-out alpha search reranks
    precision: str = "auto"  # "auto": bf16 autocast on CPUs with native bf16 and GPUs with bf16
