"""A model's Hugging Face tokenizer for query text, run by the `tokenizers` library (Rust, no
torch, no transformers).

SigLIP, SigLIP2, MetaCLIP 2 worldwide, NLLB-CLIP and the xlm-roberta CLIPs tokenize with a
Hugging Face tokenizer instead of CLIP's BPE. ``indexer.towers.tokenizer_export`` saves it as
tokenizer.json with the settings open_clip's HFTokenizer calls it with (``HfTokenizerSpec``);
this module applies them the way transformers' fast tokenizers do, so the ids are the ones the
index's model was given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import BadInput
from indexer.towers.spec import HfTokenizerSpec
from search.encoders.cleaning import CLEANERS

if TYPE_CHECKING:
    import tokenizers

# Gemma's tokenizer.json (SigLIP2) is 33 MB; the file comes with an index folder, from anyone.
_MAX_TOKENIZER_BYTES = 256 << 20


class HfTokenizer:
    """Turns query text into the ids open_clip's HFTokenizer gives: [N, context_length] int64."""

    def __init__(
        self, path: str | os.PathLike[str], spec: HfTokenizerSpec, context_length: int
    ) -> None:
        if context_length < 1:
            raise BadInput(f"context length must be at least 1, got {context_length}")
        self.context_length = context_length
        self._clean = CLEANERS[spec.clean]
        self._strip_id = spec.strip_id
        self._tokenizer = _read(path)
        # The settings transformers' fast tokenizers put on the backend for open_clip's call:
        # truncation=True (longest first) and padding="max_length" at the context length.
        self._tokenizer.enable_truncation(context_length, direction=spec.truncation_side)
        self._tokenizer.enable_padding(
            direction=spec.padding_side,
            pad_id=spec.pad_id,
            pad_token=spec.pad_token,
            length=context_length,
        )

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids [len(texts), context_length] int64, special tokens and padding included."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.context_length), dtype=np.int64)
        encoded = self._tokenizer.encode_batch([self._clean(text) for text in texts])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        if self._strip_id is not None:
            ids[ids == self._strip_id] = 0
        return ids


def _read(path: str | os.PathLike[str]) -> tokenizers.Tokenizer:
    """The tokenizer saved at path, refused when it is too large or not a tokenizer."""
    # Imported here: only towers with a Hugging Face tokenizer pay for it.
    import tokenizers

    name = os.fsdecode(path)
    with open(path, "rb") as f:
        data = f.read(_MAX_TOKENIZER_BYTES + 1)
    if len(data) > _MAX_TOKENIZER_BYTES:
        raise BadInput(f"{name}: tokenizer larger than {_MAX_TOKENIZER_BYTES >> 20} MiB")
    try:
        return tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # bad UTF-8, or tokenizers' own errors (plain Exception)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(f"{name}: not a Hugging Face tokenizer.json ({reason})") from None
