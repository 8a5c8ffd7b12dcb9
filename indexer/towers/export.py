"""Export an open_clip model's text and image towers to ONNX for torch-free queries.

A query process cannot afford to import torch and open_clip, so at index time the towers are
written as ONNX beside ``towers.json`` (see ``indexer.towers.spec.TowersSpec``) and a copy of
the BPE vocabulary, or the model's Hugging Face tokenizer as tokenizer.json
(``indexer.towers.tokenizer_export``); ``search.encoders.towers`` runs them with onnxruntime.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import open_clip
import torch
from open_clip.tokenizer import default_bpe

from indexer.atomic import replacing, write_text
from indexer.errors import BadModelSpec
from indexer.models.image_input import preprocess_input
from indexer.models.itm_head import ItmHead
from indexer.models.text_forward import OpenClipModel, trimmable, trimmed_text_forward
from indexer.towers.external_weights import attach_weights
from indexer.towers.spec import (
    HEAD_INPUTS,
    IMAGE_INPUT,
    LOGIT_OUTPUT,
    OUTPUT,
    TEXT_INPUT,
    TOKENS_OUTPUT,
    TOWERS_FILE,
    ImagePreprocess,
    RerankSpec,
    ScoreSpec,
    TowersSpec,
)
from indexer.towers.tokenizer_export import EXAMPLE_BATCH, TextSide, text_side

log = logging.getLogger(__name__)

OPSET = 17
_TOWER_FILE = re.compile(r"(text|image|head)-(?P<tag>[0-9a-f]{12})\.onnx(\.data)?")


class _Tower(torch.nn.Module):
    """One tower of a CLIP model as a module to trace: `run(model, input)` over the whole model."""

    def __init__(
        self, model: torch.nn.Module, run: Callable[[OpenClipModel, torch.Tensor], Any]
    ) -> None:
        super().__init__()
        self.model = model
        self.run = run

    def forward(self, x: torch.Tensor) -> Any:
        return self.run(self.model, x)


def _unnormalised_text(model: OpenClipModel, tokens: torch.Tensor) -> torch.Tensor:
    return model.encode_text(tokens, normalize=False)


def _unnormalised_image(model: OpenClipModel, pixels: torch.Tensor) -> torch.Tensor:
    return model.encode_image(pixels, normalize=False)


def export_towers(
    model: OpenClipModel,
    out_dir: str | os.PathLike[str],
    head: ItmHead | None = None,
    alpha: float = 1.0,
    tokenizer: Any = None,
    *,
    owned: bool = False,
) -> Path:
    """Write both towers of an open_clip CLIP model, towers.json and the vocabulary to out_dir,
    and the model's ITM `head` (with its fused-score `alpha`) when it has one.

    `tokenizer` is the model's open_clip tokenizer; it must be given for a model with a
    Hugging Face tokenizer (written as tokenizer.json), and may be None for CLIP's BPE.

    The caller's model is left as it was (device, dtype, train/eval): a float32 CPU copy is
    exported — unless the caller hands the model over (`owned`, an export process that loaded
    it for this alone), which is then exported in place, saving a second copy of its weights.
    Tower files get fresh names and towers.json, replaced atomically and last, is
    what points a reader at them, so readers see the old export or the new one, never a mix.
    Towers from earlier exports are then deleted. Returns the folder.
    """
    side = text_side(model, tokenizer)
    image_cfg = _image_preprocess(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    twin = model if owned else copy.deepcopy(model)
    twin = twin.to(device="cpu", dtype=torch.float32).eval().requires_grad_(False)
    tokens = side.examples
    pixels = torch.zeros(EXAMPLE_BATCH, 3, image_cfg.size, image_cfg.size)
    tag = uuid.uuid4().hex[:12]
    text_file, image_file = f"text-{tag}.onnx", f"image-{tag}.onnx"
    # Trimming reads CLIP's end token (the largest id) to know where padding starts.
    trim = side.hf is None and trimmable(twin)
    if head is not None and not trim:
        raise BadModelSpec(
            "the ITM head can only be served with open_clip's built-in CLIP text tower"
        )
    try:
        with torch.no_grad(), _mha_fastpath(False):
            embed_dim = int(twin.encode_text(tokens).shape[-1])
            # The image tower (the larger in CLIP models) first: tracing one clones its weights,
            # and with a memory-mapped checkpoint the pages read so far stay resident (-0.1 GB).
            axes = {IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
            _export(_Tower(twin, _unnormalised_image), (pixels,), [OUTPUT], axes, out / image_file)
            _export_text(twin, tokens, trim, out / text_file)
            rerank = None
            if head is not None:
                rerank = _export_head(head, twin, alpha, out / f"head-{tag}.onnx")
        spec = TowersSpec(side.context_length, embed_dim, image_cfg, text_file, image_file, trim,
                          rerank, tokenizer=side.hf, score=_score(twin))  # fmt: skip
        _write_tokenizer(side, out / spec.vocab_file)
        write_text(out / TOWERS_FILE, spec.to_json())
    except BaseException:
        _remove_towers(out, lambda t: t == tag)
        raise
    _remove_towers(out, lambda t: t != tag)
    log.info("exported ONNX towers (dim %d) to %s", spec.embed_dim, out)
    return out


def _image_preprocess(model: OpenClipModel) -> ImagePreprocess:
    """The model's eval image transform settings, with open_clip's defaults filled in.

    Raises BadModelSpec unless the transform is one ``indexer.media.decode.model_input``
    implements, the only one index and query pixels are made with: a square input, the
    shortest side resized and centre-cropped or the whole image squashed, bicubic or bilinear.
    """
    cfg = open_clip.get_model_preprocess_cfg(model)
    resize = preprocess_input(cfg)
    mean = cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN
    std = cfg.get("std") or open_clip.OPENAI_DATASET_STD
    return ImagePreprocess(
        size=resize.size,
        mean=_per_channel(mean),
        std=_per_channel(std),
        interpolation=resize.interpolation,
        resize_mode=resize.resize_mode,
        fill_color=int(cfg.get("fill_color", 0)),
        crop_offset=resize.crop_offset,
    )


def _export_text(model: OpenClipModel, tokens: torch.Tensor, trim: bool, target: Path) -> None:
    """Trace the text tower to target: trimmed (any length, token features too) when `trim`."""
    if not trim:
        axes = {TEXT_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
        _export(_Tower(model, _unnormalised_text), (tokens,), [OUTPUT], axes, target)
        return
    length = {0: "batch", 1: "length"}
    axes = {TEXT_INPUT: length, OUTPUT: {0: "batch"}, TOKENS_OUTPUT: length}
    _export(_Tower(model, trimmed_text_forward), (tokens,), [OUTPUT, TOKENS_OUTPUT], axes, target)


def _write_tokenizer(side: TextSide, vocab: Path) -> None:
    """Write the tokenizer the query path runs: tokenizer.json, or a copy of CLIP's BPE."""
    if side.hf is not None:
        write_text(vocab.with_name(side.hf.file), side.hf_json)
        return
    with replacing(vocab) as tmp:
        shutil.copyfile(default_bpe(), tmp)


def _score(model: OpenClipModel) -> ScoreSpec:
    """SigLIP's sigmoid (a model with a logit bias), else CLIP's cosine."""
    scale = float(model.logit_scale.exp())
    bias = getattr(model, "logit_bias", None)
    if bias is None:
        return ScoreSpec("cosine", scale, 0.0)
    return ScoreSpec("sigmoid", scale, float(bias))


def _per_channel(value: float | Sequence[float]) -> tuple[float, float, float]:
    """A mean or std for each of R, G, B: open_clip accepts one number for all three."""
    red, green, blue = (value,) * 3 if isinstance(value, int | float) else value
    return float(red), float(green), float(blue)


def _export_head(head: ItmHead, model: OpenClipModel, alpha: float, target: Path) -> RerankSpec:
    """Trace the ITM head to target; its inputs are those of `ItmHead.forward`."""
    head = copy.deepcopy(head).to(device="cpu", dtype=torch.float32).eval()
    c = head.config
    examples = (
        torch.randn(EXAMPLE_BATCH, 5, c.text_dim),
        torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
        torch.randn(EXAMPLE_BATCH + 1, c.stored_tokens, c.store_dim),
        torch.tensor([0, 2]),
    )
    rows, length = {0: "rows"}, {0: "rows", 1: "length"}
    axes = dict(zip(HEAD_INPUTS, (length, length, {0: "images"}, rows), strict=True))
    _export(head, examples, [LOGIT_OUTPUT], {**axes, LOGIT_OUTPUT: rows}, target)
    scale, bias = (float(v) for v in head.platt)
    return RerankSpec(
        head_file=target.name,
        alpha=float(alpha),
        logit_scale=float(model.logit_scale.exp()),
        platt=(scale, bias),
        stored_tokens=c.stored_tokens,
        store_dim=c.store_dim,
    )


def _export(
    module: torch.nn.Module,
    examples: tuple[torch.Tensor, ...],
    outputs: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    target: Path,
) -> None:
    """Trace a module to target (the graph) and target.data (its weights); the inputs are
    named by the keys of `dynamic_axes` that are not `outputs`."""
    inputs = [name for name in dynamic_axes if name not in outputs]
    traced = target.with_name(f".{target.name}.traced.tmp")
    try:
        with warnings.catch_warnings():
            # dynamo=False is deliberate: the newer exporter needs onnxscript, which photoseek
            # does not depend on; its deprecation notices would only alarm users.
            warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", Warning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            # The tracer flags attention's shape checks, constant for a given architecture, and
            # negative gather indices, which argmax pooling never produces; tests cover both.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", ".*If indices include negative values", UserWarning)
            # The graph alone: `attach_weights` writes the weights, without the exporter's
            # in-memory copies of them (see indexer.towers.external_weights).
            torch.onnx.export(
                module,
                examples,
                str(traced),
                export_params=False,
                keep_initializers_as_inputs=True,
                do_constant_folding=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        graph = onnx.load(traced)
    finally:
        traced.unlink(missing_ok=True)
    # onnxruntime reads weights kept in a separate file directly, instead of parsing them out of
    # the protobuf and copying them: that halves session start for ViT-B-32's text tower
    # (~0.45 s to ~0.2 s), a third of a cold query's budget.
    attach_weights(graph, module, target.with_name(f"{target.name}.data"), inputs)
    with replacing(target) as tmp:
        onnx.save_model(graph, tmp)


def _remove_towers(folder: Path, doomed: Callable[[str], bool]) -> None:
    """Delete the tower files in folder whose export tag is doomed."""
    for path in folder.iterdir():
        match = _TOWER_FILE.fullmatch(path.name)
        if match and doomed(match["tag"]):
            path.unlink(missing_ok=True)


@contextmanager
def _mha_fastpath(enabled: bool) -> Iterator[None]:
    """Set torch's fused attention fast path for the block, then put the old setting back.

    The fast path replaces nn.MultiheadAttention in eval mode with a fused kernel the ONNX
    exporter cannot translate.
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
