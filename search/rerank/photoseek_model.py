"""A photoseek model folder with an ITM head, used as a cross-encoder on any index.

The head of another model than the index's reads tokens the index never stored: each candidate's
file is decoded as `photoseek index` decodes it (`indexer.media.decode.model_input`), run
through that model's own image tower and the head's token compaction, then scored against the
text's token features from its own text tower. The fused score (`Fusion`) is that of the
index's calibration for this reranker, if any: the folder's own alpha fuses *its* ITC, which
the index's candidates do not carry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from indexer.errors import BadModelSpec
from indexer.models.fingerprints import sampled_fingerprint
from indexer.models.model_files import HEAD_FILE, HEAD_WEIGHTS, MODEL_WEIGHTS
from search.rerank.hf_loading import Checkpoint

KIND = "photoseek"


def is_model_folder(spec: str) -> bool:
    """Whether `spec` names a folder written by `photoseek train` (it has a head)."""
    folder = Path(spec).expanduser()
    return folder.is_dir() and (folder / HEAD_FILE).is_file()


def resolve_folder(spec: str) -> Checkpoint:
    """The checkpoint of a photoseek model folder: its head and encoder, fingerprinted."""
    folder = Path(spec).expanduser().resolve()
    if not (folder / HEAD_WEIGHTS).is_file() or not (folder / MODEL_WEIGHTS).is_file():
        raise BadModelSpec(f"--reranker {spec}: a model folder needs {HEAD_WEIGHTS} and "
                           f"{MODEL_WEIGHTS}")  # fmt: skip
    digest = hashlib.sha256((folder / HEAD_FILE).read_bytes())
    for name in (HEAD_WEIGHTS, MODEL_WEIGHTS):
        digest.update(sampled_fingerprint(folder / name).encode())
    return Checkpoint(spec, folder, KIND, digest.hexdigest()[:16])


class PhotoseekScorer:
    """A model folder's head on its own towers (`search.rerank.backend.PairScorer`).

    Each image's stored-form tokens are kept (by its pixels' hash, the latest `memo` of them),
    so scoring many texts against one gallery runs the image tower once per image."""

    batch = 64

    def __init__(self, folder: Path, memo: int = 8192) -> None:
        import torch

        from indexer.training.trained import load_trained

        self.torch = torch
        self.trained = load_trained(folder, "cuda" if torch.cuda.is_available() else "cpu")
        self.memo = memo
        self._images: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()

    def image_size(self) -> int | None:
        return self.trained.image_size

    def logits(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        from indexer.training.scoring import EncodedImages, encode_texts, itm_logits

        embeddings, tokens = zip(*self._encoded(images), strict=True)
        encoded = EncodedImages(self.torch.stack(embeddings), self.torch.stack(tokens))
        texts = encode_texts(self.trained, [text])
        rows = self.torch.arange(len(images))
        scores = itm_logits(self.trained.head, texts, self.torch.zeros_like(rows), encoded, rows)
        return scores.numpy().astype(np.float64)

    def _encoded(self, images: Sequence[Image.Image]) -> list[tuple[Any, Any]]:
        """Each image's (embedding, stored tokens), from the memo or the image tower."""
        from indexer.media.decode import model_input
        from indexer.training.scoring import encode_images

        pixels = [model_input(image, self.trained.image_size) for image in images]
        keys = [hashlib.sha1(p.tobytes()).digest() for p in pixels]
        missing = [i for i, key in enumerate(keys) if key not in self._images]
        if missing:
            stack = np.stack([pixels[i] for i in missing])
            chw = self.torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()
            fresh = encode_images(self.trained, chw)
            for row, i in enumerate(missing):
                self._images[keys[i]] = (fresh.embeddings[row], fresh.tokens[row])
        out = []
        for key in keys:
            self._images.move_to_end(key)
            out.append(self._images[key])
        while len(self._images) > self.memo:
            self._images.popitem(last=False)
        return out
