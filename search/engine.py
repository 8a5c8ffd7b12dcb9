"""The read side's entry point: an `Engine` over one index directory answers queries.

`Engine.open` wires catalog, vector store and query encoders (ONNX towers exported beside the
index, so no torch import on the query path). Scoring is passed in where it matters (`knn`), so
tests can substitute an exact brute-force scorer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import BadInput, IndexNotFound, UnreadableImage
from indexer.locations import TOWERS_DIR
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.store.catalog import Catalog, ImageRow
from indexer.store.index_dir import ModelRecord, model_record, open_existing
from indexer.store.vector_store import VectorStore, sync
from search.filters import Filters
from search.hits import Hit
from search.query import Term, combine

if TYPE_CHECKING:
    from search.encoders.towers import HeadScorer, ImageEncoder, TextEncoder
    from search.rerank.head import Reranker

log = logging.getLogger(__name__)

# (queries [n, d], k, allowed ids or None) -> (scores [n, k], ids [n, k]); ids -1 when missing
Knn = Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


class Engine:
    """Queries against one index: text→image, image→image, with filters and a threshold."""

    def __init__(
        self,
        directory: Path,
        catalog: Catalog,
        record: ModelRecord,
        store: VectorStore,
        knn: Knn | None = None,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        head_scorer: HeadScorer | None = None,
    ) -> None:
        self.directory = directory
        self.catalog = catalog
        self.record = record
        self.store = store
        self.knn = knn or self._faiss_knn
        self._text = text_encoder
        self._image = image_encoder
        self._head = head_scorer
        self.reranker: Reranker | None = None  # built on the first reranked query

    @classmethod
    def open(
        cls,
        directory: Path,
        knn: Knn | None = None,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        head_scorer: HeadScorer | None = None,
    ) -> Engine:
        """The engine over `directory`; encoders not given are loaded from its ONNX export
        when first needed (pass them to start loading them early)."""
        catalog = open_existing(directory)
        record = model_record(catalog)
        if record is None:
            catalog.close()
            raise IndexNotFound(f"the index in {directory} holds no images yet")
        store = VectorStore.load(directory, record.dim)
        if len(store) != catalog.counts()["images"]:
            # A run was killed before its final sync: bring a copy in line, leave the file.
            store, _ = sync(store, catalog)
        return cls(directory, catalog, record, store, knn, text_encoder, image_encoder, head_scorer)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- encoders ---------------------------------------------------------------------------

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._text_encoder().encode(texts)

    def _text_encoder(self) -> TextEncoder:
        if self._text is None:
            from search.encoders.towers import TextEncoder

            self._text = TextEncoder(self._towers())
        return self._text

    def encode_images(self, paths: list[bytes]) -> np.ndarray:
        if self._image is None:
            from search.encoders.towers import ImageEncoder

            self._image = ImageEncoder(self._towers())
        pixels = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BadInput(f"cannot read query image {path.decode(errors='replace')}: "
                               f"{e.strerror}") from None  # fmt: skip
            try:
                decoded = decoding.decode(data, extension(path), self.record.image_size)
            except UnreadableImage as e:
                raise BadInput(f"query image {path.decode(errors='replace')}: {e}") from None
            pixels.append(decoded.pixels)
        return self._image.encode(np.stack(pixels))

    def _towers(self) -> Path:
        folder = self.directory / TOWERS_DIR
        if not (folder / "towers.json").is_file():
            raise IndexNotFound(
                f"the index in {self.directory} has no query encoders; "
                "run `photoseek index` once to export them"
            )
        return folder

    # -- queries ----------------------------------------------------------------------------

    def query_vector(self, terms: Sequence[Term]) -> np.ndarray:
        return combine(terms, self.encode_texts, self.encode_images)

    def search(
        self,
        terms: Sequence[Term],
        k: int = 10,
        filters: Filters | None = None,
        threshold: float | None = None,
        rerank_k: int | None = None,
    ) -> list[Hit]:
        """The k best images for the query terms, best first.

        With `rerank_k`, the ITC top-`rerank_k` (at least k) is rescored by the ITM head and
        `threshold` applies to the calibrated match probability instead of the cosine.
        """
        vector = self.query_vector(terms)
        if rerank_k is None:
            return self.search_vector(vector, k, filters, threshold)
        if rerank_k <= 0:
            raise BadInput(f"--rerank-k must be at least 1, got {rerank_k}")
        if len(terms) != 1 or terms[0].text is None:
            raise BadInput("--rerank scores one text query against images: no arithmetic")
        if self.reranker is None:
            from search.encoders.towers import HeadScorer
            from search.rerank.head import Reranker

            head = self._head or HeadScorer(self._towers())
            self.reranker = Reranker(self._text_encoder(), head)
        candidates = self.search_vector(vector, max(k, rerank_k), filters)
        hits = self.reranker.rerank(self.catalog.tokens_by_id, terms[0].text, candidates)
        if threshold is not None:
            hits = [h for h in hits if h.extra["itm_prob"] >= threshold]
        return hits[:k]

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        threshold: float | None = None,
    ) -> list[Hit]:
        if k <= 0:
            raise BadInput(f"k must be at least 1, got {k}")
        allowed = filters.allowed_ids(self.catalog) if filters and filters.active() else None
        if allowed is not None and not len(allowed):
            return []
        scores, ids = self.knn(vector[None, :], k, allowed)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        if threshold is not None:
            found = [(i, s) for i, s in found if s >= threshold]
        rows = self.catalog.rows_by_id(i for i, _ in found)
        return [_hit(rows[i], s) for i, s in found if i in rows]

    def _faiss_knn(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.store.search(queries, k, allowed)


def _hit(row: ImageRow, score: float) -> Hit:
    return Hit(row.id, row.path, score, row.width, row.height, row.taken_at)


def brute_force_knn(catalog: Catalog, dim: int) -> Knn:
    """An exact scorer over the catalog's stored vectors, for tests and verification."""

    def knn(queries: np.ndarray, k: int, allowed: np.ndarray | None):  # noqa: ANN202
        ids = catalog.live_ids() if allowed is None else allowed
        vectors = catalog.vectors(ids, dim)
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1)
        found = ids[order]
        if found.shape[1] < k:
            pad = k - found.shape[1]
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        return top, found

    return knn
