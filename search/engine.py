"""The read side's entry point: an `Engine` over one index directory answers queries.

`Engine.open` wires catalog, vector store and query encoders (ONNX towers exported beside the
index, so no torch import on the query path). Scoring is passed in where it matters (`knn`), so
tests can substitute an exact brute-force scorer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from indexer.errors import BadInput, IndexNotFound, UnreadableImage
from indexer.locations import TOWERS_DIR
from indexer.media.discovery import extension
from indexer.store.index_dir import ModelRecord, model_record, open_existing, open_reader
from indexer.store.live_view import LiveVectors
from indexer.store.vector_store import VectorStore
from search.filters import Filters
from search.hits import Hit
from search.query import Term, combine
from search.text_match import depth, fuse_with_keywords

if TYPE_CHECKING:
    from indexer.store.catalog import Catalog
    from indexer.store.reader import CatalogReader
    from indexer.towers.spec import ScoreSpec
    from search.encoders.towers import HeadScorer, ImageEncoder, TextEncoder
    from search.rerank.protocol import Reranker

log = logging.getLogger(__name__)

# (queries [n, d], k, allowed ids or None) -> (scores [n, k], ids [n, k]); ids -1 when missing
Knn = Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]

# The full catalog (SQLAlchemy), or the sqlite3 reader a cold query without filters opens.
CatalogT = TypeVar("CatalogT", bound="Catalog | CatalogReader")


class Engine(Generic[CatalogT]):
    """Queries against one index: text→image, image→image, with filters and a threshold."""

    def __init__(
        self,
        directory: Path,
        catalog: CatalogT,
        record: ModelRecord,
        store: VectorStore,
        knn: Knn | None = None,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        head_scorer: HeadScorer | None = None,
        reranker: Reranker | None = None,
        gpu: bool = False,
    ) -> None:
        self.directory = directory
        self.catalog = catalog
        self.record = record
        self.store = store  # the vector file as loaded; `vectors` adds what was committed since
        self.store.gpu = gpu
        self.vectors = LiveVectors(store, catalog)
        self.knn = knn or self._faiss_knn
        self._text = text_encoder
        self._image = image_encoder
        self._head = head_scorer
        # a pretrained cross-encoder handed in, else the ITM head, built on the first use
        self.reranker = reranker

    @classmethod
    def open(
        cls,
        directory: Path,
        knn: Knn | None = None,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        head_scorer: HeadScorer | None = None,
        reranker: Reranker | None = None,
        gpu: bool = False,
        light: bool = False,
        once: bool = False,
    ) -> Engine[Any]:
        """The engine over `directory`; encoders not given are loaded from its ONNX export
        when first needed (pass them to start loading them early).

        `light`: read the catalog through the stdlib sqlite3 reader instead of SQLAlchemy,
        whose import costs a cold query more than its search; such an engine takes no filters.

        A vector file older than the catalog (an indexer at work, or one killed) is searched as
        it is, plus the rows committed since (`LiveVectors`): opening never trains nor writes.
        `gpu`: let searches use a GPU copy of the index where that is faster; for long-lived
        processes (the server), as the copy costs more than a cold CLI query saves.
        `once`: the process answers one query (the CLI): a Flat vector file is scanned with
        numpy instead of imported faiss (`VectorStore.load(scan=True)`)."""
        catalog = open_reader(directory) if light else open_existing(directory)
        record = model_record(catalog)
        if record is None:
            catalog.close()
            raise IndexNotFound(f"the index in {directory} holds no images yet")
        store = VectorStore.load(directory, record.dim, scan=once)
        encoders = (text_encoder, image_encoder, head_scorer, reranker)
        engine: Engine[Any] = Engine(directory, catalog, record, store, knn, *encoders, gpu=gpu)
        return engine

    def close(self) -> None:
        self.catalog.close()

    def encoders(self) -> tuple[TextEncoder | None, ImageEncoder | None, HeadScorer | None]:
        """The query encoders made so far, for an engine reopened over the same towers."""
        return self._text, self._image, self._head

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
        from indexer.media import decode as decoding  # PIL and codecs: image queries only

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
                decoded = decoding.decode(data, extension(path), self._image.image_input)
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
        text_match: bool = False,
    ) -> list[Hit]:
        """The k best images for the query terms, best first.

        With `rerank_k`, the ITC top max(k, `rerank_k`) is rescored by the ITM head and the best
        k of it by fused score come back (`search.rerank.head` states the contract);
        `threshold` then applies to the calibrated match probability instead of the cosine.
        A sigmoid (SigLIP) model scores one plain text query by its match probability, the
        cosine kept in ``extra["cosine"]``; `threshold` applies to the probability.
        `text_match`: fused with a keyword search of the query's text (`search.text_match`).
        """
        if text_match:
            return self._text_matched(terms, k, filters, threshold, rerank_k)
        vector = self.query_vector(terms)
        sigmoid = self._sigmoid_score(terms)
        if rerank_k is None and sigmoid is not None:
            hits = [replace(h, score=sigmoid.probability(h.score), extra={"cosine": h.score})
                    for h in self.search_vector(vector, k, filters)]  # fmt: skip
            return [h for h in hits if threshold is None or h.score >= threshold]
        if rerank_k is None:
            return self.search_vector(vector, k, filters, threshold)
        if rerank_k <= 0:
            raise BadInput(f"--rerank-k must be at least 1, got {rerank_k}")
        if len(terms) != 1 or terms[0].text is None:
            raise BadInput("--rerank scores one text query against images: no arithmetic")
        if self.reranker is None:
            from search.encoders.towers import HeadScorer
            from search.rerank.head import HeadReranker

            head = self._head or HeadScorer(self._towers())
            self.reranker = HeadReranker(self._text_encoder(), head)
        candidates = self.search_vector(vector, max(k, rerank_k), filters)
        hits = self.reranker.rerank(self.catalog.tokens_by_id, terms[0].text, candidates)
        if threshold is not None:
            hits = [h for h in hits if h.extra["itm_prob"] >= threshold]
        return hits[:k]

    def _text_matched(
        self,
        terms: Sequence[Term],
        k: int,
        filters: Filters | None,
        threshold: float | None,
        rerank_k: int | None,
    ) -> list[Hit]:
        if threshold is not None or rerank_k is not None:
            raise BadInput("--text-match ranks by fusion: it takes no --threshold or --rerank")
        by_vector = self.search_vector(self.query_vector(terms), depth(k), filters)
        words = " ".join(t.text for t in terms if t.text and t.weight > 0)
        return fuse_with_keywords(self.catalog, by_vector, words, filters, k)

    def _sigmoid_score(self, terms: Sequence[Term]) -> ScoreSpec | None:
        """The model's sigmoid scoring, for a query of one positive text against images."""
        if len(terms) != 1 or terms[0].text is None or terms[0].weight <= 0:
            return None
        score = self._text_encoder().score
        return score if score.kind == "sigmoid" else None

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
        found: list[tuple[int, float]] = []
        if allowed is None or len(allowed):
            scores, ids = self.knn(vector[None, :], k, allowed)
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        if filters is not None and filters.include_offline:
            found = self._with_offline(found, vector, k, filters)
        if threshold is not None:
            found = [(i, s) for i, s in found if s >= threshold]
        rows = self.catalog.rows_by_id(i for i, _ in found)
        captions = self.catalog.captions_by_id(i for i, _ in found)
        return [Hit.from_row(rows[i], s, captions.get(i)) for i, s in found if i in rows]

    def _with_offline(
        self, found: list[tuple[int, float]], vector: np.ndarray, k: int, filters: Filters
    ) -> list[tuple[int, float]]:
        """`found` merged with the best offline images: an exact scan of their stored vectors
        (they are not in FAISS while their folder is out of reach)."""
        ids = filters.offline_ids(self.catalog)
        scores = self.catalog.vectors(ids, self.record.dim) @ vector
        offline = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        return sorted(found + offline, key=lambda hit: -hit[1])[:k]

    def _faiss_knn(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors.search(queries, k, allowed)


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
