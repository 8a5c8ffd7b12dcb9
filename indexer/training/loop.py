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

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from indexer.errors import BadInput, UnreadableImage
from indexer.media.decode import decode
from indexer.models.itm_head import (
    ItmHead,
    fit_platt,
    head_config_for,
    image_features_and_tokens,
    text_features_and_tokens,
)
from indexer.models.model_files import HEAD_FILE, load_head, save_model_folder

log = logging.getLogger(__name__)

DEFAULT_ARCHITECTURE = "photoseek-shapes"
STATE_FILE = "train_state.pt"
ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)

Pair = tuple[str | os.PathLike[str], str] | tuple[str | os.PathLike[str], str, Sequence[str]]


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
    head_lr_scale: float = 1.0  # the head's learning rate relative to the towers'
    init_logit_scale: float = math.log(30)  # from-scratch models; CLIP's 1/0.07 learns slower
    head: dict[str, Any] = field(default_factory=dict)  # ItmConfig overrides
    held_out: float = 0.05  # fraction of pairs (at most 1,000) kept to pick alpha and calibrate
    rerank_k: int = 16  # candidates the held-out alpha search reranks
    precision: str = "auto"  # "auto": bf16 autocast on CPUs with native bf16 and GPUs with bf16


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


@dataclass
class Trained:
    """A loaded encoder + head pair, ready to score."""

    model: nn.Module
    head: ItmHead
    tokenizer: Any
    alpha: float
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str


# ---------------------------------------------------------------- data


def load_pixels(paths: Sequence[str | os.PathLike[str]], size: int):
    """Decode images to model input, uint8 [N, 3, size, size]; unreadable ones are skipped.

    Returns (pixels, indices of the paths kept, "path: reason" for each skipped one).
    """
    kept, arrays, skipped = [], [], []
    for i, path in enumerate(paths):
        path = Path(path)
        try:
            arrays.append(decode(path.read_bytes(), path.suffix.lower().lstrip("."), size).pixels)
            kept.append(i)
        except (OSError, UnreadableImage) as e:
            skipped.append(f"{path}: {e}")
    if not arrays:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), kept, skipped
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), kept, skipped


def _normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - m) / s


def _batches(
    groups: list[list[int]], batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled fixed-size batches that keep each group's members together."""
    order = [i for g in rng.permutation(len(groups)) for i in groups[g]]
    return [
        np.array(order[s : s + batch_size])
        for s in range(0, len(order) - batch_size + 1, batch_size)
    ] or [np.array(order)]


def _split_held_out(
    group_ids: list[int], fraction: float, seed: int
) -> tuple[list[list[int]], list[int]]:
    """Train groups (lists of pair indices) and the held-out pair indices, by whole groups."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    groups = list(members.values())
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(groups))
    budget = min(1000, int(len(group_ids) * fraction))
    held, train = [], []
    for g in order:
        if len(held) + len(groups[g]) <= budget:
            held.extend(groups[g])
        else:
            train.append(groups[g])
    return train, sorted(held)


# ---------------------------------------------------------------- model


def _create_model(model: str | None, seed: int, options: TrainOptions, locked: bool):
    """The open_clip model to train, its config dict and its tokenizer. `locked`: a tower is
    to stay frozen, which only makes sense for pretrained weights."""
    import open_clip

    from indexer.models.loading import ModelSpec, load_model, register_configs

    register_configs()
    torch.manual_seed(seed)
    if model is None or model in open_clip.list_models():
        if locked:
            raise BadInput(
                "locking a tower freezes pretrained weights: give the encoder with --model"
            )
        name = model or DEFAULT_ARCHITECTURE
        clip = open_clip.create_model(name)
        with torch.no_grad():
            clip.logit_scale.fill_(options.init_logit_scale)
        cfg = open_clip.get_model_config(name)
        return clip, cfg, open_clip.get_tokenizer(name)
    spec = ModelSpec.parse(model)
    cfg = spec.config()
    if cfg is None:
        raise BadInput(f"cannot read the architecture config of {model}")
    loaded = load_model(spec, precision="fp32", device="cpu")
    return loaded.model, cfg, loaded.tokenizer


def _precision(options: TrainOptions, device: str) -> torch.dtype | None:
    """The autocast dtype (None: fp32). On CUDA, "auto" trains in bf16 where the GPU has it
    and in fp32 otherwise: fp16 would need loss scaling, which this loop does not do."""
    from indexer.models.loading import resolve_precision

    chosen = resolve_precision(options.precision, device)
    if options.precision == "auto" and device.startswith("cuda"):
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[chosen]


def _tokenize(tokenizer, texts: Sequence[str], device: str) -> torch.Tensor:
    return tokenizer(list(texts)).to(device)


# ---------------------------------------------------------------- training


def _sample_negatives(
    sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """For each row, one column drawn with probability softmax(sim), never a `same` column."""
    weights = torch.softmax(sim.float().masked_fill(same, -math.inf), dim=1)
    # A row with nothing but identical captions falls back to any other column.
    empty = ~torch.isfinite(weights).all(dim=1) | (weights.sum(dim=1) == 0)
    weights[empty] = (~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device))[empty].float()
    return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(sim.device)


def _scale_grad(x: torch.Tensor, share: float) -> torch.Tensor:
    """`x` in the forward pass; only `share` of the gradient flows back through it."""
    if share == 1.0:
        return x
    return x.detach() if share == 0.0 else x * share + x.detach() * (1.0 - share)


def _twin_listwise(
    logits: torch.Tensor, same_group: torch.Tensor, same_caption: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy of each caption over its group's images and back.

    `logits` [b, b] holds ITM logits of (caption i, image j) wherever `same_group`; a pair's
    own image is the target, and other images with an identical caption are left out.
    """
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    keep = same_group & (eye | ~same_caption)
    masked = logits.float().masked_fill(~keep, -math.inf)
    rows = keep.sum(dim=1) > 1  # a lone pair has nothing to be ranked against
    if not rows.any():
        return logits.sum() * 0.0
    target = torch.arange(len(logits), device=logits.device)[rows]
    t2i = F.cross_entropy(masked[rows], target)
    i2t = F.cross_entropy(masked.T[rows], target)
    return (t2i + i2t) / 2


def _step_loss(
    model: nn.Module,
    head: ItmHead,
    images: torch.Tensor,
    texts: torch.Tensor,
    caption_ids: torch.Tensor,
    edits: torch.Tensor,
    has_edit: torch.Tensor,
    generator: torch.Generator,
    options: TrainOptions,
    group_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float, float]:
    """ITC + ITM loss for one batch. `edits` are one negative caption per pair (ids);
    `group_ids` (one per pair) are needed for the listwise twin term."""
    b = images.shape[0]
    itm_on = options.itm_weight != 0  # off: a plain dual encoder (CLIP), the head left as it is
    image_emb, patches = image_features_and_tokens(model, images)
    text_emb, text_tokens, text_mask = text_features_and_tokens(
        model, torch.cat([texts, edits]) if itm_on else texts
    )
    image_n = F.normalize(image_emb.float(), dim=-1)
    text_n = F.normalize(text_emb[:b].float(), dim=-1)
    scale = model.logit_scale.exp()
    eye = torch.eye(b, dtype=torch.bool, device=images.device)
    same = caption_ids[:, None] == caption_ids[None, :]
    same_group = eye if group_ids is None else group_ids[:, None] == group_ids[None, :]
    # Identical captions are never negatives; group mates only when asked.
    exclude = (same | (same_group & (not options.itc_group_negatives))) & ~eye
    itc = _itc_loss(scale * image_n @ text_n.T, exclude)
    if not itm_on:
        return itc, float(itc.detach()), 0.0

    share = options.itm_tower_grad
    text_tokens = _scale_grad(text_tokens, share)
    stored = head.compact_image_tokens(_scale_grad(patches, share), _scale_grad(image_emb, share))
    with torch.no_grad():
        sim = scale * image_n @ text_n.T
        neg_text = _sample_negatives(sim, same, generator)  # per image
        neg_image = _sample_negatives(sim.T, same, generator)  # per text
        # Uniform negatives too: once ITC knows the words, its hardest negatives are twins
        # only composition separates, and a head from scratch learns nothing from those alone.
        flat = torch.zeros_like(sim)
        any_text = _sample_negatives(flat, same, generator)
        any_image = _sample_negatives(flat, same, generator)
    rows = torch.arange(b, device=images.device)
    edit_rows = rows[has_edit]
    text_index = torch.cat([rows, neg_text, rows, any_text, rows, b + edit_rows])
    image_index = torch.cat([rows, rows, neg_image, rows, any_image, edit_rows])
    listwise = options.twin_listwise > 0 and group_ids is not None
    if listwise:
        pair_t, pair_i = (same_group & ~eye).nonzero(as_tuple=True)
        text_index = torch.cat([text_index, pair_t])
        image_index = torch.cat([image_index, pair_i])
    all_logits = head(
        text_tokens.index_select(0, text_index), text_mask[text_index], stored, image_index
    )
    n = len(all_logits) - (len(pair_t) if listwise else 0)
    logits = all_logits[:n]
    labels = torch.zeros(n, device=images.device)
    labels[:b] = 1.0
    # Positives are a sixth of the pairs at most; weighting them up keeps the logit centred.
    weight = torch.where(labels > 0, (n - b) / b, 1.0)
    itm = F.binary_cross_entropy_with_logits(logits.float(), labels, weight=weight)
    itm = itm * n / weight.sum()
    if listwise:
        grid = all_logits.new_zeros(b, b)
        grid = grid.index_put((rows, rows), all_logits[:b])
        grid = grid.index_put((pair_t, pair_i), all_logits[n:])
        itm = itm + options.twin_listwise * _twin_listwise(grid, same_group, same)
    return itc + options.itm_weight * itm, float(itc.detach()), float(itm.detach())


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
) -> TrainResult:
    """Train a dual encoder and ITM head on (image path, caption[, negative captions]) pairs.

    `model`: None trains the tiny `photoseek-shapes` architecture from scratch, as does a bare
    architecture name; an open_clip ``NAME:TAG``, ``NAME:FILE`` or ``local-dir:DIR`` is
    fine-tuned: `lock_image` freezes its image tower (LiT), `lock_text` its text tower; both
    train the head alone on the encoder as it is. `groups`: one id per pair; pairs sharing an id are
    batched together as each other's hard negatives. Same arguments and seed, same weights;
    rerunning into an `out_dir` holding an unfinished run of the same setup resumes it.
    """
    options = options or TrainOptions()
    if not pairs:
        raise BadInput("no training pairs")
    if epochs < 1 or batch_size < 2:
        raise BadInput("epochs must be >= 1 and batch_size >= 2")
    if groups is not None and len(groups) != len(pairs):
        raise BadInput(f"{len(groups)} group ids for {len(pairs)} pairs")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip, model_cfg, tokenizer = _create_model(model, seed, options, lock_image or lock_text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip = clip.to(device).train()
    if lock_image:
        clip.lock_image_tower()
    if lock_text:
        clip.lock_text_tower()
    head = ItmHead(head_config_for(clip, **options.head)).to(device).train()
    preprocess = dict(clip.visual.preprocess_cfg)
    size = clip.visual.image_size[0]
    mean, std = tuple(preprocess["mean"]), tuple(preprocess["std"])

    pixels, kept, skipped = load_pixels([p[0] for p in pairs], size)
    for reason in skipped:
        log.warning("skipping %s", reason)
    pairs = [pairs[i] for i in kept]
    if len(pairs) < 2:
        raise BadInput("fewer than two readable training images")
    group_ids = [groups[i] for i in kept] if groups is not None else list(range(len(pairs)))
    group_tensor = torch.tensor(group_ids, device=device)
    captions = [p[1] for p in pairs]
    vocab = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([vocab[c] for c in captions], device=device)
    texts = _tokenize(tokenizer, captions, device)
    negatives = [list(p[2]) if len(p) > 2 else [] for p in pairs]

    train_groups, held = _split_held_out(group_ids, options.held_out, seed)
    per_epoch = max(1, sum(len(g) for g in train_groups) // batch_size)
    total_steps = epochs * per_epoch

    groups_of_params = []
    for module, scale in ((clip, 1.0), (head, options.head_lr_scale)):
        params = [p for p in module.parameters() if p.requires_grad]
        groups_of_params += [
            {
                "params": [p for p in params if p.ndim >= 2],
                "weight_decay": options.weight_decay,
                "lr_scale": scale,
            },
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale},
        ]
    optimizer = torch.optim.AdamW(groups_of_params, lr=options.lr)
    setup = {
        "model": model,
        "lock_image": lock_image,
        "lock_text": lock_text,
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "pairs": len(pairs),
        "options": asdict(options),
    }
    start_epoch = _resume(out / STATE_FILE, setup, clip, head, optimizer)
    autocast = _precision(options, device)

    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        batches = _batches(train_groups, batch_size, rng)[:per_epoch]
        started = time.perf_counter()
        for step_in_epoch, index in enumerate(batches):
            step = epoch * per_epoch + step_in_epoch
            for g in optimizer.param_groups:
                g["lr"] = _lr(step, total_steps, options) * g["lr_scale"]
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
            edit_texts, has_edit = _pick_edits(index, negatives, captions, rng)
            x = _normalise(pixels[index].to(device), mean, std)
            with (
                torch.autocast(
                    device.split(":")[0],
                    dtype=autocast or torch.float32,
                    enabled=autocast is not None,
                ),
                _attention_kernels(device),
            ):
                loss, itc, itm = _step_loss(
                    clip,
                    head,
                    x,
                    texts[index],
                    caption_ids[index],
                    _tokenize(tokenizer, edit_texts, device),
                    torch.tensor(has_edit, device=device),
                    generator,
                    options,
                    group_tensor[index],
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            if progress is not None:
                elapsed = time.perf_counter() - started
                rate = (step_in_epoch + 1) * batch_size / max(elapsed, 1e-9)
                progress(TrainProgress(epoch, step + 1, total_steps, itc, itm, rate))
        _save_state(out / STATE_FILE, setup, epoch + 1, clip, head, optimizer)

    clip.eval()
    head.eval()
    alpha, platt = _calibrate(
        clip,
        head,
        tokenizer,
        pixels[held],
        [captions[i] for i in held],
        mean,
        std,
        options,
        device,
        autocast,
    )
    with torch.no_grad():
        head.platt.copy_(torch.tensor(platt))
    fingerprint = save_model_folder(out, clip, head, model_cfg, preprocess, alpha)
    return TrainResult(out, epochs - start_epoch, alpha, platt, fingerprint, skipped)


def _itc_loss(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over image x text `logits`, with the `exclude`d
    (off-diagonal) pairs left out of both softmaxes."""
    logits = logits.float().masked_fill(exclude, -math.inf)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _attention_kernels(device: str):
    """The attention kernels for training on `device`. On CPU, the plain matmul-softmax kernel:
    the fused (flash) one's backward is several times slower on these short sequences
    (measured here: whole training steps ran at twice the speed)."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH) if device == "cpu" else nullcontext()


def _lr(step: int, total: int, options: TrainOptions) -> float:
    """Linear warmup, then cosine decay to zero."""
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    progress = (step - options.warmup_steps) / max(1, total - options.warmup_steps)
    return options.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _pick_edits(
    index: np.ndarray, negatives: list[list[str]], captions: list[str], rng: np.random.Generator
) -> tuple[list[str], list[bool]]:
    """One of each pair's own negative captions (its caption, flagged off, when it has none)."""
    texts, flags = [], []
    for i in index:
        options = negatives[i]
        if options:
            texts.append(options[int(rng.integers(len(options)))])
        else:
            texts.append(captions[i])
        flags.append(bool(options))
    return texts, flags


def _resume(path: Path, setup: dict, clip, head, optimizer) -> int:
    """Load an unfinished run's state; the epoch to start from (0 when there is none)."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["setup"] != setup:
        raise BadInput(f"{path.parent} holds a run with other settings; use another out_dir")
    clip.load_state_dict(state["model"])
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming %s at epoch %d", path.parent, state["epoch"])
    return int(state["epoch"])


def _save_state(path: Path, setup: dict, epoch: int, clip, head, optimizer) -> None:
    state = {
        "setup": setup,
        "epoch": epoch,
        "model": clip.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interrupted save leaves the previous epoch's state intact


# ---------------------------------------------------------------- scoring


@dataclass
class EncodedImages:
    """A gallery as the index holds it: normalised ITC embeddings and stored head tokens, on
    the CPU (rankings are computed there; `itm_logits` moves what the head reads)."""

    embeddings: torch.Tensor  # [N, E] float32
    tokens: torch.Tensor  # [N, P', d] float16


@dataclass
class EncodedTexts:
    """Captions or queries: normalised ITC embeddings and the head's token inputs (on the CPU)."""

    embeddings: torch.Tensor  # [Q, E] float32
    tokens: torch.Tensor  # [Q, T, Dt]
    mask: torch.Tensor  # [Q, T]


@torch.no_grad()
def encode_images(
    trained: Trained, pixels: torch.Tensor, batch: int = 256, autocast: torch.dtype | None = None
) -> EncodedImages:
    """Embed uint8 pixels [N, 3, S, S] and produce their stored (fp16) head tokens."""
    embs, toks = [], []
    for s in range(0, len(pixels), batch):
        x = _normalise(pixels[s : s + batch].to(trained.device), trained.mean, trained.std)
        with torch.autocast(
            trained.device.split(":")[0],
            dtype=autocast or torch.float32,
            enabled=autocast is not None,
        ):
            emb, patches = image_features_and_tokens(trained.model, x)
            stored = trained.head.compact_image_tokens(patches, emb)
        embs.append(F.normalize(emb.float(), dim=-1).cpu())
        toks.append(stored.to(torch.float16).cpu())
    return EncodedImages(torch.cat(embs), torch.cat(toks))


@torch.no_grad()
def encode_texts(
    trained: Trained, texts: Sequence[str], batch: int = 512, autocast: torch.dtype | None = None
) -> EncodedTexts:
    """Embed captions and keep their token features for the head (padded to one length)."""
    embs, toks, masks = [], [], []
    for s in range(0, len(texts), batch):
        ids = _tokenize(trained.tokenizer, texts[s : s + batch], trained.device)
        with torch.autocast(
            trained.device.split(":")[0],
            dtype=autocast or torch.float32,
            enabled=autocast is not None,
        ):
            emb, tokens, mask = text_features_and_tokens(trained.model, ids)
        embs.append(F.normalize(emb.float(), dim=-1).cpu())
        toks.append(tokens.float().cpu())
        masks.append(mask.cpu())
    length = max(t.shape[1] for t in toks)
    toks = [F.pad(t, (0, 0, 0, length - t.shape[1])) for t in toks]
    masks = [F.pad(m, (0, length - m.shape[1]), value=False) for m in masks]
    return EncodedTexts(torch.cat(embs), torch.cat(toks), torch.cat(masks))


@torch.no_grad()
def itm_logits(
    head: ItmHead,
    texts: EncodedTexts,
    text_index: torch.Tensor,
    images: EncodedImages,
    image_index: torch.Tensor,
    batch: int = 4096,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """ITM logits for the pairs (texts[text_index[i]], images[image_index[i]])."""
    device = head.out.weight.device
    out = []
    for s in range(0, len(text_index), batch):
        t, i = text_index[s : s + batch], image_index[s : s + batch]
        distinct, inverse = torch.unique(i, return_inverse=True)
        with torch.autocast(
            device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            logits = head(
                texts.tokens[t].to(device),
                texts.mask[t].to(device),
                images.tokens[distinct].to(device),
                inverse.to(device),
            )
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def rerank(
    itc: torch.Tensor, k: int, score: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Full rankings [Q, N] whose first k are the ITC top-k reordered by `score`.

    `score` gets the top-k candidate indices [Q, k] and returns their scores [Q, k]; only
    the order inside the top-k changes, never which candidates are in it.
    """
    k = min(k, itc.shape[1])
    order = itc.argsort(dim=1, descending=True, stable=True)
    top = order[:, :k]
    reordered = top.gather(1, score(top).argsort(dim=1, descending=True, stable=True))
    return torch.cat([reordered, order[:, k:]], dim=1)


def fused_scorer(
    trained: Trained,
    queries: EncodedTexts | EncodedImages,
    gallery: EncodedTexts | EncodedImages,
    itc: torch.Tensor,
    alpha: float,
    autocast: torch.dtype | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A `rerank` score function: ITM logit + alpha * ITC logit (cosine * logit scale)."""
    scale = float(trained.model.logit_scale.detach().exp())
    text_side = isinstance(queries, EncodedTexts)

    def score(top: torch.Tensor) -> torch.Tensor:
        q = torch.arange(top.shape[0])[:, None].expand_as(top).reshape(-1)
        g = top.reshape(-1)
        texts, images = (queries, gallery) if text_side else (gallery, queries)
        t_index, i_index = (q, g) if text_side else (g, q)
        logits = itm_logits(trained.head, texts, t_index, images, i_index, autocast=autocast)
        return logits.view_as(top) + alpha * scale * itc.gather(1, top)

    return score


def _recall(rankings: torch.Tensor, relevant: list[set[int]], ks: Sequence[int]) -> dict:
    firsts = []
    for row, rel in zip(rankings.tolist(), relevant, strict=True):
        firsts.append(next(pos for pos, c in enumerate(row) if c in rel))
    firsts_t = torch.tensor(firsts)
    return {f"R@{k}": float((firsts_t < k).float().mean() * 100) for k in ks}


@torch.no_grad()
def _calibrate(clip, head, tokenizer, pixels, captions, mean, std, options, device, autocast):
    """Pick alpha (best text->image R@1 after rerank) and fit Platt on held-out candidates."""
    if len(captions) < 2:
        return 1.0, (1.0, 0.0)
    trained = Trained(clip, head, tokenizer, 1.0, pixels.shape[-1], mean, std, device)
    images = encode_images(trained, pixels, autocast=autocast)
    unique = list(dict.fromkeys(captions))
    texts = encode_texts(trained, unique, autocast=autocast)
    relevant = [{i for i, c in enumerate(captions) if c == u} for u in unique]
    itc = texts.embeddings @ images.embeddings.T
    k = min(options.rerank_k, len(captions))
    top = itc.argsort(dim=1, descending=True)[:, :k]
    q = torch.arange(len(unique))[:, None].expand_as(top).reshape(-1)
    logits = itm_logits(head, texts, q, images, top.reshape(-1), autocast=autocast).view_as(top)
    scale = float(clip.logit_scale.exp())
    best = (-1.0, 1.0)
    for alpha in ALPHAS:
        fused = logits + alpha * scale * itc.gather(1, top)
        first = top.gather(1, fused.argmax(dim=1, keepdim=True)).squeeze(1).tolist()
        r1 = float(np.mean([f in rel for f, rel in zip(first, relevant, strict=True)]))
        if r1 > best[0] + 1e-9:
            best = (r1, alpha)
    labels = torch.tensor(
        [[c in rel for c in row] for row, rel in zip(top.tolist(), relevant, strict=True)]
    ).float()
    return best[1], fit_platt(logits.reshape(-1), labels.reshape(-1))


# ---------------------------------------------------------------- loading and evaluation


def load_trained(out_dir: str | os.PathLike[str], device: str = "cpu") -> Trained:
    """The encoder and head `train` wrote to `out_dir`, in eval mode."""
    import open_clip

    folder = Path(out_dir).resolve()
    clip = open_clip.create_model(f"local-dir:{folder}").to(device).eval()
    head = load_head(folder, clip, device)
    meta = json.loads((folder / HEAD_FILE).read_text())
    cfg = clip.visual.preprocess_cfg
    return Trained(
        clip,
        head,
        open_clip.get_tokenizer(f"local-dir:{folder}"),
        meta["alpha"],
        int(clip.visual.image_size[0]),
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        device,
    )


def evaluate(
    trained: Trained,
    pairs: Sequence[Pair],
    *,
    twin_groups: Sequence[int] | None = None,
    ks: Sequence[int] = (8, 16, 32),
    recall_at: Sequence[int] = (1, 5, 10),
    alpha: float | None = None,
) -> dict[str, Any]:
    """Retrieval quality on a gallery of (image, caption) pairs, ITC alone and reranked.

    Text->image queries are the distinct captions (relevant: every image with that caption);
    image->text queries are the images. For each k in `ks` the ITC top-k is reordered by the
    fused score (`alpha` defaults to the one chosen at training). With `twin_groups` (one id
    per pair), twin accuracy is how often a caption's own image ranks first among its group's
    images, read from the ITC ranking and from each reranked one.
    """
    alpha = trained.alpha if alpha is None else alpha
    autocast = _precision(TrainOptions(), trained.device)
    pixels, kept, skipped = load_pixels([p[0] for p in pairs], trained.image_size)
    if skipped:
        raise BadInput(f"unreadable evaluation images: {'; '.join(skipped[:3])}")
    captions = [p[1] for p in pairs]
    images = encode_images(trained, pixels, autocast=autocast)
    unique = list(dict.fromkeys(captions))
    texts = encode_texts(trained, unique, autocast=autocast)
    caption_index = {c: i for i, c in enumerate(unique)}
    t2i_relevant = [set() for _ in unique]
    for i, c in enumerate(captions):
        t2i_relevant[caption_index[c]].add(i)
    i2t_relevant = [{caption_index[c]} for c in captions]

    t2i_itc = texts.embeddings @ images.embeddings.T
    i2t_itc = t2i_itc.T.contiguous()
    report: dict[str, Any] = {
        "images": len(pairs),
        "captions": len(unique),
        "alpha": alpha,
        "t2i": {},
        "i2t": {},
        "twin_accuracy": {},
    }
    # Top-k lists for smaller k are prefixes of the largest one: score that once.
    big = max(ks)
    t2i_big = _prefix_scores(
        fused_scorer(trained, texts, images, t2i_itc, alpha, autocast), t2i_itc, big
    )
    i2t_big = _prefix_scores(
        fused_scorer(trained, images, texts, i2t_itc, alpha, autocast), i2t_itc, big
    )
    rankings = {
        "itc": (
            t2i_itc.argsort(dim=1, descending=True, stable=True),
            i2t_itc.argsort(dim=1, descending=True, stable=True),
        )
    }
    for k in ks:
        rankings[f"rerank@{k}"] = (
            rerank(t2i_itc, k, lambda top: t2i_big[:, : top.shape[1]]),
            rerank(i2t_itc, k, lambda top: i2t_big[:, : top.shape[1]]),
        )
    for name, (t2i, i2t) in rankings.items():
        report["t2i"][name] = _recall(t2i, t2i_relevant, recall_at)
        report["i2t"][name] = _recall(i2t, i2t_relevant, recall_at)
        if twin_groups is not None:
            report["twin_accuracy"][name] = _twin_accuracy(t2i, unique, captions, twin_groups)
    return report


def _prefix_scores(
    score: Callable[[torch.Tensor], torch.Tensor], itc: torch.Tensor, k: int
) -> torch.Tensor:
    return score(itc.argsort(dim=1, descending=True, stable=True)[:, : min(k, itc.shape[1])])


def _twin_accuracy(
    t2i: torch.Tensor, unique: list[str], captions: list[str], twin_groups: Sequence[int]
) -> float:
    position = torch.empty_like(t2i)
    position.scatter_(1, t2i, torch.arange(t2i.shape[1]).expand_as(t2i).contiguous())
    members: dict[int, list[int]] = {}
    for i, g in enumerate(twin_groups):
        members.setdefault(g, []).append(i)
    caption_index = {c: i for i, c in enumerate(unique)}
    hits = []
    for i, c in enumerate(captions):
        twins = members[twin_groups[i]]
        pos = position[caption_index[c], twins]
        hits.append(twins[int(pos.argmin())] == i)
    return float(np.mean(hits) * 100)
