"""Distil a teacher reranker into a compact ITM head on a frozen dual encoder.

The student is the same `ItmHead` `train` fits, on the encoder an index was built with (its
`--model` spec), both towers frozen: only the head learns, so the encoder keeps its
fingerprint and the head stays tied to it. The data are plain: image files, and per text the
images it is scored against (its ITC top-k and the images its edits are scored against) with
the teacher's match log-odds for each. No true pairing is read anywhere: the teacher's scores
are the only targets (`indexer.training.distil_losses`: soft BCE, a listwise KL or their sum).

Since the towers are frozen, the image patch tokens and the texts' token features are computed
once; each step runs only the head. What is trained is the fused score a reranked query ranks
by, head logit + alpha x ITC logit, with alpha fitted before training as the slope of the
teacher's scores on ITC inside each text's pool (`itc_weight`): the head learns what ITC
misses. A share of the texts is held out: there Platt scaling maps the fused score to the
teacher's match probability. `out_dir` then holds an
ordinary model folder (`save_model_folder`): `photoseek index --model OUT` stores its tokens and
`search --rerank` runs it without torch. The train state is rewritten after every epoch, so an
interrupted run resumes (`indexer.training.checkpoints`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from indexer.errors import BadInput
from indexer.models.itm_head import ItmHead, fit_platt, head_config_for, image_features_and_tokens
from indexer.models.loading import default_device
from indexer.models.model_files import save_model_folder
from indexer.models.pixels import standardise
from indexer.progress import Progress
from indexer.training.checkpoints import STATE_FILE, resume, save_state
from indexer.training.data import load_pixels
from indexer.training.distil_losses import LOSSES, distil_loss
from indexer.training.model import create_model
from indexer.training.optimizer import build_optimizer, set_learning_rate
from indexer.training.options import TrainOptions
from indexer.training.precision import attention_kernels, autocast_dtype, autocasting
from indexer.training.scoring import EncodedTexts, encode_texts
from indexer.training.trained import ClipModel, Trained


@dataclass(frozen=True)
class DistilQuery:
    """One text and the teacher's match log-odds for each of its candidate images."""

    text: str
    images: tuple[int, ...]  # indices into the run's image list
    teacher: tuple[float, ...]  # the teacher's logit for each


@dataclass(frozen=True)
class DistilOptions:
    """Everything about a distillation run besides its data and encoder."""

    loss: str = "listwise"  # "bce" | "listwise" | "mix" (`distil_losses.LOSSES`)
    epochs: int = 10
    seed: int = 0
    texts_per_batch: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    held_out: float = 0.1  # share of the texts kept to pick alpha and calibrate
    precision: str = "auto"
    head: dict[str, Any] = field(default_factory=dict)  # ItmConfig overrides


@dataclass(frozen=True)
class DistilResult:
    """What `distil_head` wrote and fitted."""

    out_dir: Path
    epochs_run: int
    alpha: float
    platt: tuple[float, float]
    encoder_fingerprint: str
    held_out_texts: int
    skipped: list[str]  # "path: reason" for images that could not be read


@dataclass
class _Features:
    """The frozen towers' outputs, computed once: what the head reads."""

    patches: torch.Tensor  # [N, P, Di] float16, on the CPU
    embeddings: torch.Tensor  # [N, E] float32
    texts: EncodedTexts
    itc_scale: float = 1.0  # the encoder's logit scale: ITC logit = scale x cosine


def distil_head(
    model: str,
    images: Sequence[str | os.PathLike[str]],
    queries: Sequence[DistilQuery],
    out_dir: str | os.PathLike[str],
    options: DistilOptions | None = None,
    progress: Callable[[Progress], None] | None = None,
    device: str | None = None,
) -> DistilResult:
    """Train a head on `model`'s frozen towers to reproduce the teacher's scores in `queries`."""
    options = options or DistilOptions()
    _check(images, queries, options)
    device = device or default_device()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip, model_cfg, tokenizer = create_model(model, options.seed, TrainOptions(), locked=True)
    clip = clip.to(device).eval()
    for parameter in clip.parameters():
        parameter.requires_grad_(False)
    head = ItmHead(head_config_for(clip, **options.head)).to(device).train()
    preprocess = dict(clip.visual.preprocess_cfg)
    autocast = autocast_dtype(options.precision, device)
    pixels, kept, skipped = load_pixels(images, int(clip.visual.image_size[0]))
    queries = _readable(queries, kept)
    trained = Trained(clip, head, tokenizer, 1.0, pixels.shape[-1], tuple(preprocess["mean"]),
                      tuple(preprocess["std"]), device)  # fmt: skip
    features = _features(trained, pixels, [q.text for q in queries], autocast)
    train_rows, held = _split(len(queries), options)
    train_options = TrainOptions(lr=options.lr, warmup_steps=options.warmup_steps)
    optimizer = build_optimizer(clip, head, train_options)
    setup = {"model": model, "images": len(kept), "queries": len(queries),
             "targets": _digest(queries), "options": asdict(options)}  # fmt: skip
    start = resume(out / STATE_FILE, setup, clip, head, optimizer)
    features.itc_scale = float(clip.logit_scale.exp())
    pairs = _pairs(features, queries, train_rows.tolist())
    alpha = itc_weight(*pairs)
    if start == 0:  # the head starts at the teacher's level: bce needs not spend epochs on it
        with torch.no_grad():
            head.out.bias.fill_(teacher_level(*pairs, alpha))
    loop = _Loop(head, optimizer, train_options, setup, out / STATE_FILE, clip)
    _train(loop, features, queries, train_rows, alpha, options, start, progress)
    head.eval()
    platt = _calibrate(head, features, queries, held, alpha)
    with torch.no_grad():
        head.get_buffer("platt").copy_(torch.tensor(platt))
    fingerprint = save_model_folder(out, clip, head, model_cfg, preprocess, alpha)
    return DistilResult(out, options.epochs - start, alpha, platt, fingerprint, len(held), skipped)


@dataclass
class _Loop:
    """What the training loop updates and where it saves its state."""

    head: ItmHead
    optimizer: torch.optim.Optimizer
    train_options: TrainOptions
    setup: dict[str, Any]
    state: Path
    clip: ClipModel


def _train(
    loop: _Loop,
    features: _Features,
    queries: Sequence[DistilQuery],
    train_rows: np.ndarray,
    alpha: float,
    options: DistilOptions,
    start: int,
    progress: Callable[[Progress], None] | None,
) -> None:
    """The epochs from `start` on: the fused score (head logit + alpha x ITC logit, what a
    reranked query ranks by) against the teacher's, the state saved after each epoch."""
    device = next(loop.head.parameters()).device.type
    autocast = autocast_dtype(options.precision, device)
    per_epoch = max(1, len(train_rows) // options.texts_per_batch)
    total = per_epoch * options.epochs
    started = time.perf_counter()
    for epoch in range(start, options.epochs):
        order = np.random.default_rng([options.seed, epoch]).permutation(train_rows)
        for s in range(per_epoch):
            step = epoch * per_epoch + s
            set_learning_rate(loop.optimizer, step, total, loop.train_options)
            rows = order[s * options.texts_per_batch : (s + 1) * options.texts_per_batch]
            with autocasting(device, autocast), attention_kernels(device):
                fused, teacher, mask = _grid(loop.head, features, queries, rows.tolist(), alpha)
                loss = distil_loss(options.loss, fused, teacher, mask)
            loop.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loop.optimizer.step()
            if progress is not None:
                rate = (step + 1 - start * per_epoch) / max(time.perf_counter() - started, 1e-9)
                info = f"epoch {epoch + 1}  {options.loss} {float(loss.detach()):.4f}"
                progress(Progress("distilling", step + 1, total, "steps", info + f"  {rate:.1f}/s"))
        save_state(loop.state, loop.setup, epoch + 1, loop.clip, loop.head, loop.optimizer)


def itc_weight(teacher: torch.Tensor, itc: torch.Tensor, mask: torch.Tensor) -> float:
    """Alpha: the slope of the teacher's scores on the ITC logit inside each text's pool
    (least squares, each text's own mean removed, as a reranking is blind to it), at least 0.

    The student's fused score is head + alpha x ITC; with alpha carrying what ITC already
    explains of the teacher, the head's capacity goes to what ITC misses (composition). A
    head trained on the whole score spends it on relearning ITC."""
    m = mask.float()
    count = m.sum(dim=1, keepdim=True).clamp(min=1)
    t = (teacher - (teacher * m).sum(dim=1, keepdim=True) / count) * m
    x = (itc - (itc * m).sum(dim=1, keepdim=True) / count) * m
    spread = float((x * x).sum())
    return max(0.0, float((t * x).sum()) / spread) if spread > 0 else 0.0


def _check(
    images: Sequence[str | os.PathLike[str]], queries: Sequence[DistilQuery], options: DistilOptions
) -> None:
    if options.loss not in LOSSES:
        raise BadInput(f"--loss {options.loss!r}: choose one of {', '.join(LOSSES)}")
    if options.epochs < 1 or options.texts_per_batch < 1:
        raise BadInput("epochs and texts per batch must be at least 1")
    if len(queries) < 2:
        raise BadInput("distillation needs teacher scores for at least two texts")
    for q in queries:
        if len(q.images) != len(q.teacher) or any(not 0 <= i < len(images) for i in q.images):
            raise BadInput(f"the candidates of {q.text!r} do not match its teacher scores")


def _readable(queries: Sequence[DistilQuery], kept: list[int]) -> list[DistilQuery]:
    """`queries` over the images that decoded, renumbered to the decoded pixels' rows."""
    row = {image: r for r, image in enumerate(kept)}
    out = []
    for q in queries:
        pairs = [(row[i], t) for i, t in zip(q.images, q.teacher, strict=True) if i in row]
        if pairs:
            out.append(DistilQuery(q.text, *(tuple(part) for part in zip(*pairs, strict=True))))
    if len(out) < 2:
        raise BadInput("fewer than two texts have a readable candidate image")
    return out


def _digest(queries: Sequence[DistilQuery]) -> str:
    """A hash of the texts, candidates and teacher scores: a state trained on other targets
    (another teacher, or the same run's data changed) is never resumed as this run's."""
    digest = hashlib.sha256()
    for q in queries:
        digest.update(repr((q.text, q.images, q.teacher)).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def _features(
    trained: Trained, pixels: torch.Tensor, texts: list[str], autocast: torch.dtype | None
) -> _Features:
    """Patch tokens and embeddings of every image, token features of every text (frozen)."""
    patches, embeddings = [], []
    for s in range(0, len(pixels), 256):
        x = standardise(pixels[s : s + 256].to(trained.device), trained.mean, trained.std)
        with autocasting(trained.device, autocast):
            emb, tokens = image_features_and_tokens(trained.model, x)
        patches.append(tokens.to(torch.float16).cpu())
        embeddings.append(emb.float().cpu())
    encoded = encode_texts(trained, texts, autocast=autocast)
    return _Features(torch.cat(patches), torch.cat(embeddings), encoded)


def _split(count: int, options: DistilOptions) -> tuple[np.ndarray, list[int]]:
    """Train rows and held-out rows (at least one of each) of `count` texts."""
    rng = np.random.default_rng([options.seed, 2])
    order = rng.permutation(count)
    held = min(max(1, int(round(count * options.held_out))), count - 1, 1000)
    return np.sort(order[held:]), sorted(order[:held].tolist())


def teacher_level(
    teacher: torch.Tensor, itc: torch.Tensor, mask: torch.Tensor, alpha: float
) -> float:
    """The mean of the teacher's scores less alpha x ITC over the real pairs: where the head's
    logit starts, so the fused score starts at the teacher's level."""
    m = mask.float()
    return float(((teacher - alpha * itc) * m).sum() / m.sum().clamp(min=1))


def _pairs(
    features: _Features, queries: Sequence[DistilQuery], rows: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher logits, ITC logits and the mask of real candidates, [texts, candidates], for the
    queries at `rows` (which are also their rows in `features.texts`); on the CPU."""
    batch = [queries[r] for r in rows]
    width = max(len(q.images) for q in batch)
    where = (torch.tensor([b for b, q in enumerate(batch) for _ in q.images]),
             torch.tensor([c for q in batch for c in range(len(q.images))]))  # fmt: skip
    image_rows = torch.tensor([i for q in batch for i in q.images])
    text_rows = torch.tensor(list(rows))[where[0]]
    image = F.normalize(features.embeddings[image_rows].float(), dim=-1)
    cosine = (image * F.normalize(features.texts.embeddings[text_rows].float(), dim=-1)).sum(-1)
    grids = [torch.zeros(len(batch), width) for _ in range(3)]
    grids[0][where] = torch.tensor([t for q in batch for t in q.teacher])
    grids[1][where] = features.itc_scale * cosine
    grids[2][where] = 1.0
    return grids[0], grids[1], grids[2]


def _grid(
    head: ItmHead,
    features: _Features,
    queries: Sequence[DistilQuery],
    rows: Sequence[int],
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's fused scores, the teacher's logits and the mask of real candidates,
    [texts, candidates], for the queries at `rows`, on the head's device."""
    device = next(head.parameters()).device
    batch = [queries[r] for r in rows]
    text_rows = torch.tensor([b for b, q in enumerate(batch) for _ in q.images])
    columns = torch.tensor([c for q in batch for c in range(len(q.images))])
    image_rows = torch.tensor([i for q in batch for i in q.images])
    distinct, inverse = torch.unique(image_rows, return_inverse=True)
    stored = head.compact_image_tokens(
        features.patches[distinct].to(device).float(), features.embeddings[distinct].to(device)
    )
    query_ids = torch.tensor(list(rows))[text_rows]
    texts = features.texts
    logits = head(texts.tokens[query_ids].to(device), texts.mask[query_ids].to(device), stored,
                  inverse.to(device))  # fmt: skip
    where = (text_rows.to(device), columns.to(device))
    width = max(len(q.images) for q in batch)
    student = logits.new_zeros(len(batch), width).index_put(where, logits)
    teacher, itc, mask = (t.to(device) for t in _pairs(features, queries, rows))
    return student + alpha * itc.to(student.dtype), teacher, mask


@torch.no_grad()
def _calibrate(
    head: ItmHead,
    features: _Features,
    queries: Sequence[DistilQuery],
    held: list[int],
    alpha: float,
) -> tuple[float, float]:
    """Platt's (scale, bias) of the fused score on the teacher's match probability, on the
    held-out texts."""
    fused, teacher, mask = (t.float().cpu() for t in _grid(head, features, queries, held, alpha))
    real = mask.bool()
    return fit_platt(fused[real], torch.sigmoid(teacher[real]))
