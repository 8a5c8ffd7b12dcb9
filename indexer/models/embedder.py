"""Turn batches of preprocessed pixels and texts into L2-normalised embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from indexer.models.loading import LoadedModel, ModelIdentity
from indexer.models.pixels import standardise

if TYPE_CHECKING:
    import torch

# Images standardised at once on the way to a half-precision tower (`_tower_input`).
_CHUNK = 4


class Embedder(Protocol):
    """What the indexer embeds images with: the torch tower or an ONNX engine
    (`indexer.towers.image_engine`), both fed the decoder's uint8 [B, S, S, 3] pixels."""

    identity: ModelIdentity
    dim: int
    image_size: int
    precision: str  # fp32, bf16, fp16 or int8
    engine: str  # "torch" or "onnxruntime"
    loaded: LoadedModel | None  # the torch model behind it, if there is one

    def with_tokens(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class ImageEmbedder:
    """Encodes uint8 RGB batches [B, S, S, 3] (already resized and cropped) with the image tower."""

    engine = "torch"

    def __init__(self, loaded: LoadedModel) -> None:
        import torch

        self._torch = torch
        self.loaded: LoadedModel | None = loaded
        self.identity, self.dim, self.image_size = loaded.identity, loaded.dim, loaded.image_size
        self.precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
            loaded.dtype
        ]
        self._loaded = loaded

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.with_tokens(pixels)[0]

    def with_tokens(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings [B, D], and the ITM head's stored tokens [B, P', d] fp16 if it has one."""
        torch = self._torch
        loaded, head = self._loaded, self._loaded.head
        with torch.inference_mode():
            x = self._tower_input(pixels)
            if head is None:
                features, tokens = loaded.model.encode_image(x), None
            else:
                from indexer.models.itm_head import image_features_and_tokens

                features, patches = image_features_and_tokens(loaded.model, x)
                tokens = head.compact_image_tokens(patches, features).to(torch.float16)
                tokens = tokens.cpu().numpy()
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy(), tokens

    def _tower_input(self, pixels: np.ndarray) -> torch.Tensor:
        """The standardised batch [B, 3, S, S] in the tower's dtype, with the decoder's strides.

        In bf16 or fp16 the float32 step is taken `_CHUNK` images at a time: for a whole batch it
        sat beside its cast copy (32 images at 256 px: 25 MB + 12.6 MB at once). Element by
        element, so the values are the one-shot cast's.
        """
        torch, loaded = self._torch, self._loaded
        batch = torch.from_numpy(pixels).to(loaded.device).permute(0, 3, 1, 2)
        if loaded.dtype == torch.float32:
            return standardise(batch, loaded.mean, loaded.std)
        x = torch.empty_like(batch, dtype=loaded.dtype)  # keeps the permuted strides
        for start in range(0, len(batch), _CHUNK):
            chunk = batch[start : start + _CHUNK]
            x[start : start + _CHUNK] = standardise(chunk, loaded.mean, loaded.std)
        return x


def embed_texts(loaded: LoadedModel, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings with the torch text tower."""
    import torch

    with torch.inference_mode():
        tokens = loaded.tokenizer(texts).to(loaded.device)
        features = loaded.model.encode_text(tokens).float()
        features = torch.nn.functional.normalize(features, dim=-1)
    return features.cpu().numpy()
