"""What a cross-encoder backend offers: match logits for one text against a batch of images,
and, where the model lets the image side run apart (BLIP), that side alone for caching.

On a CPU with native bf16 (AVX512-BF16/AMX) the models can run under bf16 autocast
($PHOTOSEEK_RERANK_PRECISION: fp32, the default; bf16; or auto, bf16 where the CPU multiplies
it natively as `--precision auto` decides for indexing, fp32 elsewhere). fp32 stays the
default, since no trained weights could be checked here: bench/rerank_bench.py measured bf16
about 3x faster on BLIP (cached path, with `inference_model`'s weights cast once) and ranking
as fp32 does on random weights.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from indexer.errors import BadModelSpec
from indexer.models.precision import cpu_has_native_bf16

PRECISION_ENV = "PHOTOSEEK_RERANK_PRECISION"
RERANK_PRECISIONS = ("fp32", "bf16", "auto")


def rerank_precision(device: str, value: str | None = None) -> str:
    """fp32 or bf16: `value` (else $PHOTOSEEK_RERANK_PRECISION, else fp32) with auto resolved
    for `device`: bf16 on a CPU with native bf16, fp32 elsewhere (CUDA runs as before)."""
    chosen = (os.environ.get(PRECISION_ENV, "") if value is None else value).strip() or "fp32"
    if chosen not in RERANK_PRECISIONS:
        raise BadModelSpec(
            f"{PRECISION_ENV}={chosen}: unknown reranker precision "
            f"(choose one of {', '.join(RERANK_PRECISIONS)})"
        )
    if chosen == "auto":
        return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    return chosen


class PairScorer(Protocol):
    """One transformers ITM model with its processor."""

    batch: int  # pairs per forward pass

    def image_size(self) -> int | None:
        """The longest side the processor resizes to (decoding may stop there), if known."""
        ...

    def logits(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        """Match log-odds [n] of `text` against each image."""
        ...


@runtime_checkable
class SplitScorer(PairScorer, Protocol):
    """A scorer whose image side runs without the text: its output can be cached per image."""

    def vision(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The image side's output [n, tokens, dim] float32."""
        ...

    def logits_from_vision(self, text: str, vision: np.ndarray) -> np.ndarray:
        """Match log-odds [n] of `text` against images given by their `vision` output."""
        ...


class HfScorer:
    """Shared by the backends: a model in eval mode on the best device, and its processor."""

    model_class = ""  # transformers class the backend loads
    batch = 8

    def __init__(self, model: Any, processor: Any, precision: str | None = None) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.precision = rerank_precision(self.device, precision)
        self._bf16_model: Any = None  # made on the first bf16 run

    def inference_model(self) -> Any:
        """The model to run: `model` in fp32; in bf16 a copy whose linear layers are bf16
        already, so autocast does not recast their weights on every call (it rounds them to the
        same values). The rest stays fp32: models read their patch embedding's dtype to choose
        the dtype of the whole residual stream (BLIP, ViLT)."""
        if self.precision != "bf16":
            return self.model
        if self._bf16_model is None:
            torch = self.torch
            model = copy.deepcopy(self.model)
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
            self._bf16_model = model.eval()
        return self._bf16_model

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Inference mode, under bf16 autocast when the scorer runs in bf16 (weights stay
        fp32: autocast runs the matmuls in bf16 and keeps norms and softmax in fp32)."""
        torch = self.torch
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device, torch.bfloat16, enabled=bf16):
            yield

    @classmethod
    def from_folder(cls, folder: Path) -> HfScorer:
        import transformers

        model = getattr(transformers, cls.model_class).from_pretrained(folder)
        return cls(model, transformers.AutoProcessor.from_pretrained(folder))

    def image_size(self) -> int | None:
        size = getattr(getattr(self.processor, "image_processor", None), "size", None)
        values = [v for v in dict(size or {}).values() if isinstance(v, int)]
        return max(values) if values else None

    def inputs(self, text: str, images: Sequence[Image.Image]) -> dict[str, Any]:
        """The processor's tensors for `text` paired with each image, on the model's device."""
        encoded = self.processor(
            images=list(images), text=[text] * len(images), return_tensors="pt",
            padding=True, truncation=True,
        )  # fmt: skip
        return {key: value.to(self.device) for key, value in encoded.items()}

    def logits(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        with self.running():
            return self.pair_logits(self.inputs(text, images)).float().cpu().numpy()

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        """The match log-odds tensor [n] from processed inputs."""
        raise NotImplementedError


def match_minus_no_match(two_way: Any) -> Any:
    """Log-odds of a two-way ITM head's [n, 2] logits, "match" at index 1."""
    return two_way[:, 1] - two_way[:, 0]
