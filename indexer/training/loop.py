"""Train a dual encoder and its ITM rerank head together (ALBEF-style), and evaluate both.

`train` optimises one loss, ITC + `itm_weight` * ITM, with gradients flowing from the head into
both towers: the contrastive loss (CLIP's symmetric one) shapes the embeddings the index
searches, and the matching loss teaches the patch tokens where each thing is. ITM sees, for each
pair in a batch: the positive; a negative caption and a negative image sampled in proportion to
their ITC similarity (ALBEF's in-batch hard negatives, never a pair with an identical caption);
a negative caption and image drawn uniformly from the batch (without these easy ones a head
trained from scratch sits at chance: the hard ones soon differ only in composition); and one of
the pair's own negative captions when the data gives some (caption edits). Pairs that
share a `groups` id (e.g. twin renderings of one layout) are put in the same batch, so each is
the others' hardest negative for both losses. With both towers of a pretrained encoder locked
(`lock_image`, `lock_text`), the head alone learns on the encoder as it is (ITC then only moves
the logit scale); with `itm_weight` 0, a plain dual encoder trains and the head stays untouched.
Where the pairs come with object boxes, `ground_weight` adds a loss that points the words of
each named object at its box in the head's cross-attention (`indexer.training.grounding`).

Search scores a candidate with the fused score

    fused = itm_logit + alpha * logit_scale * cosine(text, image)

over the ITC top-k; `alpha` is picked on pairs held out from the training data (never the test
set), and the head's Platt calibration is fitted on the same held-out candidates.

`out_dir` gets open_clip's local-dir layout (``open_clip_config.json``,
``open_clip_model.safetensors``: ``open_clip.create_model("local-dir:" + out_dir)`` loads it),
the head (``itm_head.safetensors`` and ``itm_head.json``: config, calibration, alpha and the
fingerprint of the encoder weights it was trained with) and ``train_state.pt``, rewritten after
every epoch, from which an interrupted run resumes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.errors import BadInput
from indexer.models.itm_head import ItmHead, head_config_for
from indexer.models.loading import default_device
from indexer.models.model_files import save_model_folder
from indexer.models.pixels import standardise
from indexer.training.calibration import calibrate
from indexer.training.checkpoints import STATE_FILE, resume, save_state
from indexer.training.data import (
    Grounding,
    Pair,
    TrainData,
    batches,
    check_run,
    pick_edits,
    read_training_data,
    split_held_out,
    tokenize,
)
from indexer.training.grounding import Box
from indexer.training.losses import Batch, step_loss
from indexer.training.model import create_model
from indexer.training.optimizer import build_optimizer, set_learning_rate
from indexer.training.options import TrainOptions
from indexer.training.precision import attention_kernels, autocast_dtype, autocasting
from indexer.training.trained import ClipModel, Trained


@dataclass(frozen=True)
class TrainProgress:
    """One report to the progress callback."""

    epoch: int
    step: int
    steps: int
    itc_loss: float
    itm_loss: float
    images_per_s: float


@dataclass(frozen=True)
class TrainResult:
    """What `train` wrote and learned."""

    out_dir: Path
    epochs_run: int
    alpha: float
    platt: tuple[float, float]
    encoder_fingerprint: str
    skipped: list[str]  # "path: reason" for images that could not be read


def train(
    pairs: Sequence[Pair],
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    lock_image: bool = False,
    lock_text: bool = False,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    groups: Sequence[int] | None = None,
    options: TrainOptions | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    device: str | None = None,
    boxes: Sequence[Mapping[str, Box]] | None = None,
) -> TrainResult:
    """Train a dual encoder and ITM head on (image path, caption[, negative captions]) pairs.

    `model`: None trains the tiny `photoseek-shapes` architecture from scratch, as does a bare
    architecture name; an open_clip ``NAME:TAG``, ``NAME:FILE`` or ``local-dir:DIR`` is
    fine-tuned: `lock_image` freezes its image tower (LiT), `lock_text` its text tower; both
    train the head alone on the encoder as it is. `groups`: one id per pair; pairs sharing an id are
    batched together as each other's hard negatives. `boxes`: one dict per pair from an object's
    words in the caption (``"red circle"``) to its box in the image's pixels, for
    `options.ground_weight` (`indexer.training.grounding`). Same arguments and seed, same weights;
    rerunning into an `out_dir` holding an unfinished run of the same setup resumes it.
    """
    options = options or TrainOptions()
    check_run(pairs, epochs, batch_size, groups)
    if options.ground_weight > 0 and not (boxes and any(boxes)):
        raise BadInput("--ground-weight needs object boxes with the pairs (a 'boxes' field)")
    setup = _Setup(model, lock_image, lock_text, epochs, seed, batch_size, options)
    run = _start(setup, pairs, groups, boxes, Path(out_dir), device or default_device())
    for epoch in range(run.start_epoch, epochs):
        _train_epoch(run, epoch, progress)
        save_state(run.out / STATE_FILE, run.record, epoch + 1, run.clip, run.head, run.optimizer)
    return _finish(run)


@dataclass(frozen=True)
class _Setup:
    """`train`'s arguments besides the data: a run resumes only into the same setup."""

    model: str | None
    lock_image: bool
    lock_text: bool
    epochs: int
    seed: int
    batch_size: int
    options: TrainOptions

    def record(self, pairs: int) -> dict[str, Any]:
        """The setup as the train state records it, for `pairs` readable pairs."""
        return {
            "model": self.model,
            "lock_image": self.lock_image,
            "lock_text": self.lock_text,
            "epochs": self.epochs,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "pairs": pairs,
            "options": asdict(self.options),
        }


@dataclass(frozen=True)
class _Run:
    """A started run: what its epochs and its finish share."""

    setup: _Setup
    record: dict[str, Any]  # `setup` as the train state records it
    out: Path
    device: str
    autocast: torch.dtype | None
    clip: ClipModel
    head: ItmHead
    tokenizer: Any
    model_cfg: dict[str, Any]
    preprocess: dict[str, Any]  # open_clip's preprocess_cfg: image size, mean, std, ...
    data: TrainData
    train_groups: list[list[int]]  # pair indices, a group per list
    held: list[int]  # pair indices kept out, to pick alpha and calibrate
    optimizer: torch.optim.Optimizer
    per_epoch: int  # steps
    start_epoch: int  # where an interrupted run resumes; 0 for a new one

    @property
    def total_steps(self) -> int:
        return self.setup.epochs * self.per_epoch


def _start(
    setup: _Setup,
    pairs: Sequence[Pair],
    groups: Sequence[int] | None,
    boxes: Sequence[Mapping[str, Box]] | None,
    out: Path,
    device: str,
) -> _Run:
    """Build the model, head, data and optimiser, and resume an unfinished run in `out`."""
    options = setup.options
    locked = setup.lock_image or setup.lock_text
    clip, model_cfg, tokenizer = create_model(setup.model, setup.seed, options, locked)
    out.mkdir(parents=True, exist_ok=True)
    clip = clip.to(device).train()
    if setup.lock_image:
        clip.lock_image_tower()
    if setup.lock_text:
        clip.lock_text_tower()
    head = ItmHead(head_config_for(clip, **options.head)).to(device).train()
    preprocess = dict(clip.visual.preprocess_cfg)
    grounding = None
    if boxes is not None and options.ground_weight > 0:
        c = head.config
        grounding = Grounding(boxes, (c.grid // c.pool, 1 if c.embed_dim else 0))
    size = clip.visual.image_size[0]
    data = read_training_data(pairs, groups, size, tokenizer, device, grounding)
    train_groups, held = split_held_out(data.group_ids, options.held_out, setup.seed)
    optimizer = build_optimizer(clip, head, options)
    record = setup.record(len(data.captions))
    start_epoch = resume(out / STATE_FILE, record, clip, head, optimizer)
    return _Run(
        setup=setup,
        record=record,
        out=out,
        device=device,
        autocast=autocast_dtype(options.precision, device),
        clip=clip,
        head=head,
        tokenizer=tokenizer,
        model_cfg=model_cfg,
        preprocess=preprocess,
        data=data,
        train_groups=train_groups,
        held=held,
        optimizer=optimizer,
        per_epoch=max(1, sum(len(g) for g in train_groups) // setup.batch_size),
        start_epoch=start_epoch,
    )


def _train_epoch(run: _Run, epoch: int, progress: Callable[[TrainProgress], None] | None) -> None:
    """One epoch: an optimiser step per batch, each reported to `progress`."""
    batch_size = run.setup.batch_size
    rng = np.random.default_rng([run.setup.seed, epoch])
    epoch_batches = batches(run.train_groups, batch_size, rng)[: run.per_epoch]
    started = time.perf_counter()
    for step_in_epoch, index in enumerate(epoch_batches):
        step = epoch * run.per_epoch + step_in_epoch
        itc, itm = _train_step(run, step, index, rng)
        if progress is not None:
            elapsed = time.perf_counter() - started
            rate = (step_in_epoch + 1) * batch_size / max(elapsed, 1e-9)
            progress(TrainProgress(epoch, step + 1, run.total_steps, itc, itm, rate))


def _train_step(
    run: _Run, step: int, index: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """One optimiser step on the pairs at `index`; its ITC and ITM losses."""
    options = run.setup.options
    set_learning_rate(run.optimizer, step, run.total_steps, options)
    generator = torch.Generator().manual_seed(run.setup.seed * 1_000_003 + step)
    batch = _batch(run, index, rng)
    with autocasting(run.device, run.autocast), attention_kernels(run.device):
        loss, itc, itm = step_loss(run.clip, run.head, batch, generator, options)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    with torch.no_grad():
        run.clip.logit_scale.clamp_(0, math.log(100))
    return itc, itm


def _batch(run: _Run, index: np.ndarray, rng: np.random.Generator) -> Batch:
    """The pairs at `index` on the device, each with one of its negative captions."""
    data, device = run.data, run.device
    edit_texts, has_edit = pick_edits(index, data.negatives, data.captions, rng)
    ground = None
    if data.ground is not None:
        tokens, cells = data.ground.select(torch.from_numpy(index), data.texts.shape[1])
        ground = (tokens.to(device), cells.to(device))
    return Batch(
        images=standardise(
            data.pixels[index].to(device), run.preprocess["mean"], run.preprocess["std"]
        ),
        texts=data.texts[index],
        caption_ids=data.caption_ids[index],
        edits=tokenize(run.tokenizer, edit_texts, device),
        has_edit=torch.tensor(has_edit, device=device),
        group_ids=data.groups[index],
        ground=ground,
    )


def _finish(run: _Run) -> TrainResult:
    """Pick alpha and calibrate the head on the held-out pairs, and write the model folder."""
    clip, head, data = run.clip, run.head, run.data
    clip.eval()
    head.eval()
    mean, std = tuple(run.preprocess["mean"]), tuple(run.preprocess["std"])
    trained = Trained(clip, head, run.tokenizer, 1.0, data.pixels.shape[-1], mean, std, run.device)
    held_captions = [data.captions[i] for i in run.held]
    alpha, platt = calibrate(
        trained, data.pixels[run.held], held_captions, run.setup.options.rerank_k, run.autocast
    )
    with torch.no_grad():
        head.get_buffer("platt").copy_(torch.tensor(platt))
    fingerprint = save_model_folder(run.out, clip, head, run.model_cfg, run.preprocess, alpha)
    epochs_run = run.setup.epochs - run.start_epoch
    return TrainResult(run.out, epochs_run, alpha, platt, fingerprint, data.skipped)
