"""What a cross-encoder backend offers: match logits for one text against a batch of images,
and, where the model lets the image side run apart (BLIP), that side alone for caching."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image


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

    def __init__(self, model: Any, processor: Any) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()
        self.processor = processor

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
        with self.torch.inference_mode():
            return self.pair_logits(self.inputs(text, images)).float().cpu().numpy()

    def pair_logits(self, inputs: dict[str, Any]) -> Any:
        """The match log-odds tensor [n] from processed inputs."""
        raise NotImplementedError


def match_minus_no_match(two_way: Any) -> Any:
    """Log-odds of a two-way ITM head's [n, 2] logits, "match" at index 1."""
    return two_way[:, 1] - two_way[:, 0]
