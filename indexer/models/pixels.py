"""Pixel standardisation: the one arithmetic every image tower's input goes through.

Indexing (torch), the torch-free query path (numpy, ONNX) and training all feed a tower
``(x - 255 * mean) / (255 * std)`` computed in float32 in this order, so the same decoded
pixels give the same floats on every path. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Pixels = TypeVar("Pixels", np.ndarray, "torch.Tensor")


def _scaled(values: Sequence[float]) -> np.ndarray:
    return (np.asarray(values, dtype=np.float32) * np.float32(255.0)).reshape(1, 3, 1, 1)


def standardise(pixels: Pixels, mean: Sequence[float], std: Sequence[float]) -> Pixels:
    """uint8 pixels [B, 3, S, S] (numpy or torch) to the tower's float32 input, per channel."""
    m, s = _scaled(mean), _scaled(std)
    if isinstance(pixels, np.ndarray):
        return (pixels.astype(np.float32) - m) / s
    import torch

    device = pixels.device
    return (pixels.float() - torch.from_numpy(m).to(device)) / torch.from_numpy(s).to(device)
