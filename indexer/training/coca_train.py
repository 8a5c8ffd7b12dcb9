"""Train a CoCa captioner (Yu et al. 2022): an open_clip CoCa whose loss is CLIP's contrastive
one on its pooled embeddings plus `caption_weight` times the captioning loss, the next-token
cross-entropy of its multimodal decoder with the caption fed in (teacher forcing).

The default architecture, `photoseek-shapes-coca` in data/model_configs, is small enough to
train on two CPU cores: a 3-layer ViT (patch 8 on 64 px) with an attentional pooler for the
decoder, a 2-layer text tower with a CLS token and a 2-layer decoder, all 64 wide, over CLIP's
BPE with a 12-token context (the longest shapes-world caption, start and end tokens included, is
11). Most of its 7M weights are the two 49,408-token tables (the text embedding and the
decoder's output), and most of a step's time goes to them.

`out_dir` gets open_clip's local-dir layout (``open_clip_config.json``,
``open_clip_model.safetensors``), which ``load_captioner(out_dir)`` and
``open_clip.create_model("local-dir:" + out_dir)`` load.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.atomic import replacing, write_text
from indexer.errors import BadInput
from indexer.models.loading import default_device, list_architectures
from indexer.models.model_files import MODEL_CONFIG, MODEL_WEIGHTS
from indexer.models.pixels import standardise
from indexer.training.data import (
    Pair,
    TrainData,
    batches,
    check_run,
    read_training_data,
    split_held_out,
)
from indexer.training.losses import itc_loss
from indexer.training.model import create_model
from indexer.training.optimizer import build_optimizer, set_learning_rate
from indexer.training.options import TrainOptions
from indexer.training.precision import attention_kernels, autocast_dtype, autocasting

DEFAULT_CAPTIONER = "photoseek-shapes-coca"

# An open_clip CoCa; open_clip ships no type hints to name it by.
CocaModel = Any


@dataclass(frozen=True)
class CocaOptions:
    """A CoCa run's loss weighting; the optimiser, schedule, precision and initial logit scale
    are `TrainOptions`' (its ITM, head and held-out fields do not apply)."""

    caption_weight: float = 2.0  # CoCa's lambda_Cap: the paper's 2, the contrastive weight 1
    train: TrainOptions = field(default_factory=lambda: TrainOptions(warmup_steps=50))


@dataclass(frozen=True)
class CocaProgress:
    """One report to the progress callback."""

    epoch: int
    step: int
    steps: int
    contrastive_loss: float
    caption_loss: float
    images_per_s: float


@dataclass(frozen=True)
class CocaResult:
    """What `train_captioner` wrote, and its last epoch's mean losses."""

    out_dir: Path
    steps: int
    contrastive_loss: float
    caption_loss: float
    seconds: float
    skipped: list[str]  # "path: reason" for images that could not be read


def train_captioner(
    pairs: Sequence[Pair],
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 64,
    groups: Sequence[int] | None = None,
    options: CocaOptions | None = None,
    progress: Callable[[CocaProgress], None] | None = None,
    device: str | None = None,
) -> CocaResult:
    """Train a CoCa on (image path, caption) pairs and save it to `out_dir`.

    `model`: None trains `photoseek-shapes-coca` from scratch, as does another CoCa architecture
    name; a ``local-dir:DIR`` (or ``NAME:FILE``) CoCa is fine-tuned. `groups`: one id per pair;
    pairs sharing an id are batched together, so twins are each other's contrastive negatives.
    Same arguments and seed, same weights.
    """
    options = options or CocaOptions()
    check_run(pairs, epochs, batch_size, groups)
    device = device or default_device()
    coca, model_cfg, tokenizer = create_model(
        model or DEFAULT_CAPTIONER, seed, options.train, locked=False
    )
    if "multimodal_cfg" not in model_cfg:
        raise BadInput(f"{model or DEFAULT_CAPTIONER} is not a CoCa (its config has no decoder)")
    if model is None or model in list_architectures():
        _init_decoder_projection(coca)
    coca = coca.to(device).train()
    preprocess = dict(coca.visual.preprocess_cfg)
    data = read_training_data(pairs, groups, coca.visual.image_size[0], tokenizer, device)
    # no head: CoCa's decoder is part of the model, so the optimiser's head groups stay empty
    optimizer = build_optimizer(coca, nn.Module(), options.train)
    autocast = autocast_dtype(options.train.precision, device)
    run = _Run(coca, options, optimizer, data, preprocess, device, autocast)
    started = time.perf_counter()
    # no pairs held out: a captioner has no fused score to tune on them
    train_groups, _ = split_held_out(data.group_ids, 0.0, seed)
    per_epoch = max(1, len(data.captions) // batch_size)
    losses = (math.nan, math.nan)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        epoch_batches = batches(train_groups, batch_size, rng)[:per_epoch]
        losses = _train_epoch(run, epoch, epoch_batches, epochs * per_epoch, progress)
    seconds = time.perf_counter() - started
    out = Path(out_dir)
    save_captioner(out, coca.eval(), model_cfg, preprocess)
    return CocaResult(out, epochs * per_epoch, *losses, seconds, data.skipped)


def _init_decoder_projection(coca: CocaModel) -> None:
    """Draw the decoder's output projection as open_clip means to (normal, std width^-0.5).

    open_clip 3.3 makes it with torch.empty, and the decoder's init_parameters, which would
    draw it, is never called (and fails: it reads an attribute the decoder lacks). Left alone,
    a fresh CoCa starts from whatever that memory held: zeros in a new process, garbage or inf
    after other work, never the seed's weights."""
    decoder = coca.text_decoder
    with torch.no_grad():
        nn.init.normal_(decoder.text_projection, std=decoder.width**-0.5)


@dataclass(frozen=True)
class _Run:
    """What every step of a run shares."""

    coca: CocaModel
    options: CocaOptions
    optimizer: torch.optim.Optimizer
    data: TrainData
    preprocess: dict[str, Any]  # open_clip's preprocess_cfg: image size, mean, std, ...
    device: str
    autocast: torch.dtype | None


def _train_epoch(
    run: _Run,
    epoch: int,
    epoch_batches: list[np.ndarray],
    total: int,
    progress: Callable[[CocaProgress], None] | None,
) -> tuple[float, float]:
    """One epoch of optimiser steps; its mean contrastive and caption losses."""
    started = time.perf_counter()
    sums = np.zeros(2)
    for i, index in enumerate(epoch_batches):
        step = epoch * len(epoch_batches) + i
        set_learning_rate(run.optimizer, step, total, run.options.train)
        contrastive, caption = _losses(run, index)
        loss = contrastive + run.options.caption_weight * caption
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        with torch.no_grad():
            run.coca.logit_scale.clamp_(0, math.log(100))
        sums += (float(contrastive.detach()), float(caption.detach()))
        if progress is not None:
            rate = (i + 1) * len(index) / max(time.perf_counter() - started, 1e-9)
            contrastive_mean, caption_mean = (float(v) for v in sums / (i + 1))
            progress(CocaProgress(epoch, step + 1, total, contrastive_mean, caption_mean, rate))
    contrastive_mean, caption_mean = sums / max(1, len(epoch_batches))
    return float(contrastive_mean), float(caption_mean)


def _losses(run: _Run, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrastive and caption losses of the pairs at `index` (identical captions are
    never each other's contrastive negatives)."""
    coca, data, device = run.coca, run.data, run.device
    images = standardise(
        data.pixels[index].to(device), run.preprocess["mean"], run.preprocess["std"]
    )
    ids = data.caption_ids[index]
    with autocasting(device, run.autocast), attention_kernels(device):
        out = coca(images, data.texts[index])
        sims = out["logit_scale"] * out["image_features"].float() @ out["text_features"].float().T
        eye = torch.eye(len(index), dtype=torch.bool, device=device)
        contrastive = itc_loss(sims, (ids[:, None] == ids[None, :]) & ~eye)
        caption = caption_loss(out, coca.pad_id)
    return contrastive, caption


def caption_loss(out: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """CoCa's captioning loss: the decoder's next-token cross-entropy over a forward's
    ``logits`` and ``labels``, padding left out (as `open_clip.loss.CoCaLoss` computes it)."""
    return F.cross_entropy(
        out["logits"].float().permute(0, 2, 1), out["labels"], ignore_index=pad_id
    )


def save_captioner(
    out: Path, coca: nn.Module, model_cfg: dict[str, Any], preprocess: dict[str, Any]
) -> None:
    """Write `coca` to `out` in open_clip's local-dir layout, each file replaced atomically."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in coca.state_dict().items()}
    with replacing(out / MODEL_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    write_text(out / MODEL_CONFIG, json.dumps(config, indent=2) + "\n")
