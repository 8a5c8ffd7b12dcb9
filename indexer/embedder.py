"""Turn batches of preprocessed pixels and texts into L2-normalised embeddings."""

from __future__ import annotations

import numpy as np

from indexer.model_loading import LoadedModel


class ImageEmbedder:
    """Encodes uint8 RGB batches [B, S, S, 3] (already resized and cropped) with the image tower."""

    def __init__(self, loaded: LoadedModel) -> None:
        import torch

        self._torch = torch
        self.loaded = loaded
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(loaded.mean, device=loaded.device).view(shape) * 255.0
        self._std = torch.tensor(loaded.std, device=loaded.device).view(shape) * 255.0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.loaded.device).permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).to(self.loaded.dtype)
            features = self.loaded.model.encode_image(x).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()


def embed_texts(loaded: LoadedModel, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings with the torch text tower."""
    import torch

    with torch.inference_mode():
        tokens = loaded.tokenizer(texts).to(loaded.device)
        features = loaded.model.encode_text(tokens).float()
        features = torch.nn.functional.normalize(features, dim=-1)
    return features.cpu().numpy()
