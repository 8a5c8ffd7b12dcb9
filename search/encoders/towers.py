"""Query-time text and image encoders that run the exported ONNX towers without torch.

A cold ``photoseek search`` must answer in well under a second, and importing torch and
open_clip alone takes seconds. ``indexer.towers.export`` writes the two towers, ``towers.json``
and the BPE vocabulary into one folder; this module reads that folder with onnxruntime and a
torch-free tokenizer. Query images arrive as ``indexer.media.decode`` pixels, the very function that
made the index's vectors, so a photo searched for by itself meets its own vector.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Self, TypeVar

import numpy as np

from indexer.errors import BadInput, IndexNotFound
from indexer.models.pixels import standardise
from indexer.models.text_tokens import real_tokens, trim_padding
from indexer.towers.optimised import optimised_path
from indexer.towers.spec import (
    HEAD_INPUTS,
    IMAGE_INPUT,
    LOGIT_OUTPUT,
    OUTPUT,
    TEXT_INPUT,
    TOKENS_OUTPUT,
    RerankSpec,
    ScoreSpec,
    TowersSpec,
)
from search.encoders.tokenizer import ClipTokenizer

if TYPE_CHECKING:
    import onnxruntime

    from indexer.media.decode import ImageInput

log = logging.getLogger(__name__)

Loaded = TypeVar("Loaded")


class _Tower(Generic[Loaded]):
    """A tower's session (with whatever else it runs with), loaded on first use or in the
    background ahead of it."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int) -> None:
        if batch_size < 1:
            raise BadInput(f"batch size must be at least 1, got {batch_size}")
        self.folder = Path(folder)
        self.spec = TowersSpec.read(self.folder)
        self.batch_size = batch_size
        self._loaded: Loaded | None = None
        self._loading: Future[Loaded] | None = None

    def load_in_background(self) -> Self:
        """Start loading in a thread, overlapping the caller's own start-up.

        onnxruntime builds the session without holding the GIL, so on a cold query this hides
        most of its cost behind the catalog and FAISS imports.
        """
        if self._loading is None and self._loaded is None:
            loading: Future[Loaded] = Future()
            self._loading = loading
            threading.Thread(target=self._load_into, args=(loading,), daemon=True).start()
        return self

    def _load_into(self, loading: Future[Loaded]) -> None:
        try:
            loading.set_result(self._load())
        except BaseException as e:  # handed to the thread that calls encode()
            loading.set_exception(e)

    def _ready(self) -> Loaded:
        if self._loaded is None:
            loading = self._loading
            self._loaded = loading.result() if loading is not None else self._load()
        return self._loaded

    def _load(self) -> Loaded:
        raise NotImplementedError


# Texts to token ids [N, context_length]: CLIP's BPE or the model's Hugging Face tokenizer.
Tokenize = Callable[[str | Sequence[str]], np.ndarray]


class TextEncoder(_Tower["tuple[onnxruntime.InferenceSession, Tokenize]"]):
    """Embeds query text with the exported text tower: unit-length float32 rows."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        batch_size: int = 64,
        threads: int | None = None,
        once: bool = False,
    ) -> None:
        super().__init__(folder, batch_size)
        self.score: ScoreSpec = self.spec.score  # how the model turns a cosine into a score
        self.threads = threads  # onnxruntime's intra-op threads (`_open_session`)
        self.once = once  # for a process that encodes one query (`_open_once`)

    def _load(self) -> tuple[onnxruntime.InferenceSession, Tokenize]:
        # The session in a thread of its own, as onnxruntime builds it without the GIL: the
        # tokenizer, pure Python, is built meanwhile instead of before it.
        with ThreadPoolExecutor(1) as pool:
            session = pool.submit(self._session)
            tokenizer = self._tokenizer()
            return session.result(), tokenizer

    def _session(self) -> onnxruntime.InferenceSession:
        path = _existing(self.folder / self.spec.text_file)
        if self.once:
            return _open_once(path, optimised_path(self.folder, path.name))
        return _open_session(path, self.threads)

    def _tokenizer(self) -> Tokenize:
        hf = self.spec.tokenizer
        if hf is None:
            return ClipTokenizer(_existing(self.folder / self.spec.vocab_file),
                                 self.spec.context_length)  # fmt: skip
        # Imported here, so a CLIP model's cold query never imports `tokenizers`.
        from search.encoders.hf_tokenizer import HfTokenizer

        return HfTokenizer(_existing(self.folder / hf.file), hf, self.spec.context_length)

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embeddings [len(texts), embed_dim], L2-normalised; a lone string is one text."""
        session, tokenizer = self._ready()
        tokens = self._ids(tokenizer, texts)
        batches = (
            _run(session, TEXT_INPUT, tokens[start : start + self.batch_size])
            for start in range(0, len(tokens), self.batch_size)
        )
        return _stack_normalised(batches, self.spec.embed_dim)

    def encode_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's per-token features [1, L, width] and their mask [1, L] (True up to and
        including the end token): what the ITM head reads."""
        session, tokenizer = self._ready()
        if not self.spec.text_trimmed:
            raise BadInput("this model's text tower does not export token features")
        ids = self._ids(tokenizer, text)
        features = session.run([TOKENS_OUTPUT], {TEXT_INPUT: ids})[0]
        return features, real_tokens(ids)

    def _ids(self, tokenizer: Tokenize, texts: str | Sequence[str]) -> np.ndarray:
        tokens = tokenizer(texts)
        return trim_padding(tokens) if self.spec.text_trimmed else tokens


class HeadScorer(_Tower["onnxruntime.InferenceSession"]):
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

    def _load(self) -> onnxruntime.InferenceSession:
        return _open_session(_existing(self.folder / self.rerank.head_file))

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


class ImageEncoder(_Tower["onnxruntime.InferenceSession"]):
    """Embeds decoded images with the exported image tower: unit-length float32 rows."""

    def __init__(self, folder: str | os.PathLike[str], batch_size: int = 32) -> None:
        super().__init__(folder, batch_size)
        self.image_size = self.spec.image.size

    @property
    def image_input(self) -> ImageInput:
        """How query photos are resized for this tower (cropped or squashed): as the index's
        photos were, so a photo searched for by itself meets its own vector."""
        from indexer.media.decode import ImageInput  # Pillow: image queries only

        image = self.spec.image
        return ImageInput(image.size, image.resize_mode, image.interpolation, image.crop_offset)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Embeddings [B, embed_dim], L2-normalised, of uint8 RGB pixels [B, S, S, 3].

        The pixels are ``indexer.media.decode.decode(data, ext, self.image_input).pixels``,
        stacked, with S = image_size.
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

    def _load(self) -> onnxruntime.InferenceSession:
        return _open_session(_existing(self.folder / self.spec.image_file))

    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, 3] to the tower's float32 [B, 3, S, S], standardised per channel as
        the indexer's embedder does, so both feed the tower the same floats."""
        channels_first = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        return standardise(channels_first, self.spec.image.mean, self.spec.image.std)


def _existing(path: Path) -> Path:
    """The path, or IndexNotFound when an export is incomplete."""
    if not path.is_file():
        raise IndexNotFound(f"{path}: missing from the exported towers; re-export them")
    return path


def _open_session(
    path: Path, threads: int | None = None, optimise: bool = True, prepack: bool = True
) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session for one tower, using every core for the one query in flight;
    or `threads` for a process serving many queries at once, whose idle pool threads then
    sleep instead of spinning on the cores the other requests need. `optimise=False`: for a
    graph saved already optimised; `prepack=False`: see `_open_once`."""
    # Imported here so that commands which never encode don't pay for onnxruntime's import.
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    if threads is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimise:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _open_once(path: Path, optimised: Path) -> onnxruntime.InferenceSession:
    """The session for a process that encodes one query: from the graph the indexer saved
    optimised (`indexer.towers.optimised`), else `path` optimised now; either way without
    re-laying every weight matrix out for the matmul kernels ("prepacking"), which takes a
    ViT-B text tower ~0.3 s at start-up to save ~0.03 s per encode. The embedding moves by
    ~1e-6 (L2), its cosines by well under 1e-6."""
    if optimised.is_file():
        try:
            return _open_session(optimised, optimise=False, prepack=False)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            log.warning("%s: unusable (%s); optimising %s instead", optimised, e, path.name)
    return _open_session(path, prepack=False)


def _run(session: onnxruntime.InferenceSession, input_name: str, batch: np.ndarray) -> np.ndarray:
    """One tower's raw embeddings for one batch."""
    return session.run([OUTPUT], {input_name: batch})[0]


def _stack_normalised(batches: Iterable[np.ndarray], embed_dim: int) -> np.ndarray:
    """Join batches of embeddings into [N, embed_dim] float32 rows of unit length."""
    out = np.concatenate([np.empty((0, embed_dim), dtype=np.float32), *batches])
    # Same floor as torch's F.normalize, so an all-zero row stays zero instead of NaN.
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
