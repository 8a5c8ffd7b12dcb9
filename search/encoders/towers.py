"""Query-time text and image encoders that run the exported ONNX towers without torch.

A cold ``photoseek search`` must answer in well under a second, and importing torch and
open_clip alone takes seconds. ``indexer.towers.export`` writes the two towers, ``towers.json``
and the BPE vocabulary into one folder; this module reads that folder with onnxruntime and a
torch-free tokenizer. Query images arrive as ``indexer.media.decode`` pixels, the very function that
made the index's vectors, so a photo searched for by itself meets its own vector.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import BadInput, IndexNotFound
from indexer.towers.spec import (
    HEAD_INPUTS,
    IMAGE_INPUT,
    LOGIT_OUTPUT,
    OUTPUT,
    TEXT_INPUT,
    TOKENS_OUTPUT,
    RerankSpec,
    TowersSpec,
)
from search.encoders.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    import onnxruntime


class _Tower:
    """A tower's session, loaded on first use or in the background ahead of it."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int) -> None:
        if batch_size < 1:
            raise BadInput(f"batch size must be at least 1, got {batch_size}")
        self.folder = Path(folder)
        self.spec = TowersSpec.read(self.folder)
        self.batch_size = batch_size
        self._session: onnxruntime.InferenceSession | None = None
        self._loading: Future[None] | None = None

    def load_in_background(self) -> _Tower:
        """Start loading in a thread, overlapping the caller's own start-up.

        onnxruntime builds the session without holding the GIL, so on a cold query this hides
        most of its cost behind the catalog and FAISS imports.
        """
        if self._loading is None and self._session is None:
            self._loading = Future()
            threading.Thread(target=self._load_into_future, daemon=True).start()
        return self

    def _load_into_future(self) -> None:
        try:
            self._load()
            self._loading.set_result(None)
        except BaseException as e:  # handed to the thread that calls encode()
            self._loading.set_exception(e)

    def _ready(self) -> onnxruntime.InferenceSession:
        if self._loading is not None:
            self._loading.result()
        elif self._session is None:
            self._load()
        return self._session

    def _load(self) -> None:
        raise NotImplementedError


class TextEncoder(_Tower):
    """Embeds query text with the exported text tower: unit-length float32 rows."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int = 64) -> None:
        super().__init__(folder, batch_size)
        self._tokenizer: ClipTokenizer | None = None

    def _load(self) -> None:
        vocab = _existing(self.folder / self.spec.vocab_file)
        self._tokenizer = ClipTokenizer(vocab, self.spec.context_length)
        self._session = _open_session(_existing(self.folder / self.spec.text_file))

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embeddings [len(texts), embed_dim], L2-normalised; a lone string is one text."""
        session = self._ready()
        tokens = self._ids(texts)
        batches = (
            _run(session, TEXT_INPUT, tokens[start : start + self.batch_size])
            for start in range(0, len(tokens), self.batch_size)
        )
        return _stack_normalised(batches, self.spec.embed_dim)

    def encode_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's per-token features [1, L, width] and their mask [1, L] (True up to and
        including the end token): what the ITM head reads."""
        session = self._ready()
        if not self.spec.text_trimmed:
            raise BadInput("this model's text tower does not export token features")
        ids = self._ids(text)
        features = session.run([TOKENS_OUTPUT], {TEXT_INPUT: ids})[0]
        mask = np.arange(ids.shape[1])[None, :] <= ids.argmax(axis=1)[:, None]
        return features, mask

    def _ids(self, texts: str | Sequence[str]) -> np.ndarray:
        tokens = self._tokenizer(texts)
        if self.spec.text_trimmed and len(tokens):  # cut padding after the longest text's end
            tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
        return tokens


class HeadScorer(_Tower):
    """The exported ITM head: match logits of one query's text tokens against candidates'
    stored image tokens."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(folder, batch_size=1)
        if self.spec.rerank is None:
            raise BadInput(
                "--rerank needs a model trained with an ITM head (`photoseek train`); "
                "this index's model has none"
            )
        self.rerank: RerankSpec = self.spec.rerank

    def _load(self) -> None:
        self._session = _open_session(_existing(self.folder / self.rerank.head_file))

    def logits(
        self, text_tokens: np.ndarray, text_mask: np.ndarray, image_tokens: np.ndarray
    ) -> np.ndarray:
        """Logits [M] of text tokens [1, L, width] (mask [1, L]) against each of M images'
        stored tokens [M, stored_tokens, store_dim] (any float dtype)."""
        session = self._ready()
        m = len(image_tokens)
        feeds = dict(
            zip(
                HEAD_INPUTS,
                (
                    np.repeat(text_tokens.astype(np.float32), m, axis=0),
                    np.repeat(text_mask, m, axis=0),
                    image_tokens.astype(np.float32),
                    np.arange(m, dtype=np.int64),
                ),
                strict=True,
            )
        )
        return session.run([LOGIT_OUTPUT], feeds)[0]

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated match probabilities (Platt scaling fitted at training)."""
        scale, bias = self.rerank.platt
        return 1.0 / (1.0 + np.exp(-(scale * logits + bias)))


class ImageEncoder(_Tower):
    """Embeds decoded images with the exported image tower: unit-length float32 rows."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int = 32) -> None:
        super().__init__(folder, batch_size)
        self.image_size = self.spec.image.size
        # Scaled to 0-255 as the indexer's embedder does, so both feed the tower the same floats.
        self._mean = np.asarray(self.spec.image.mean, dtype=np.float32) * 255.0
        self._std = np.asarray(self.spec.image.std, dtype=np.float32) * 255.0

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Embeddings [B, embed_dim], L2-normalised, of uint8 RGB pixels [B, S, S, 3].

        The pixels are ``indexer.decode.decode(...).pixels``, stacked, with S = image_size.
        """
        expected = (self.image_size, self.image_size, 3)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise BadInput(
                f"image pixels must be uint8 [B, {', '.join(map(str, expected))}], "
                f"got {pixels.dtype} {list(pixels.shape)}"
            )
        session, size = self._ready(), self.batch_size
        # Normalised a batch at a time: float32 copies of a whole album would not fit in memory.
        batches = (
            _run(session, IMAGE_INPUT, self._normalise(pixels[start : start + size]))
            for start in range(0, len(pixels), size)
        )
        return _stack_normalised(batches, self.spec.embed_dim)

    def _load(self) -> None:
        self._session = _open_session(_existing(self.folder / self.spec.image_file))

    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, 3] to the tower's float32 [B, 3, S, S], standardised per channel."""
        scaled = (pixels.astype(np.float32) - self._mean) / self._std
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def _existing(path: Path) -> Path:
    """The path, or IndexNotFound when an export is incomplete."""
    if not path.is_file():
        raise IndexNotFound(f"{path}: missing from the exported towers; re-export them")
    return path


def _open_session(path: Path) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session for one tower, using every core for the one query in flight."""
    # Imported here so that commands which never encode don't pay for onnxruntime's import.
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _run(session: onnxruntime.InferenceSession, input_name: str, batch: np.ndarray) -> np.ndarray:
    """One tower's raw embeddings for one batch."""
    return session.run([OUTPUT], {input_name: batch})[0]


def _stack_normalised(batches: Iterable[np.ndarray], embed_dim: int) -> np.ndarray:
    """Join batches of embeddings into [N, embed_dim] float32 rows of unit length."""
    out = np.concatenate([np.empty((0, embed_dim), dtype=np.float32), *batches])
    # Same floor as torch's F.normalize, so an all-zero row stays zero instead of NaN.
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
