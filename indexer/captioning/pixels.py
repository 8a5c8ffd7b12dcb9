"""Photos handed to a captioner, made the size it wants by photoseek's own resize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from indexer.media.decode import ImageInput, model_input, to_rgb


def square_pixels(images: Sequence[Image.Image], shape: ImageInput) -> np.ndarray:
    """uint8 RGB [B, S, S, 3]: each image resized and cropped as `shape` says (a no-op for one
    photoseek's decoder already made that size)."""
    return np.stack([model_input(to_rgb(image), shape) for image in images])
