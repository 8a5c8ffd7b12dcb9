"""Image→text: the texts that best match an image, from a vocabulary, a file, or a corpus.

- A built-in vocabulary (data/vocab/NAME_concepts.txt) is embedded with every prompt template in
  NAME_templates.txt and averaged per concept, as CLIP does for zero-shot labels.
- A --texts file is embedded line by line.
Both are cached in the index's catalog, keyed by model and text, so a second run encodes nothing.
- A caption corpus added once with `photoseek texts add` has its own FAISS index (texts.faiss).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import BadInput
from indexer.locations import data_dir
from indexer.progress import Progress
from indexer.store.vector_store import TEXTS_FILE, VectorStore
from search.engine import Engine

DEFAULT_VOCAB = "photo"


@dataclass(frozen=True)
class TextHit:
    """One text matching an image."""

    text: str
    score: float


def list_vocabularies() -> list[str]:
    return sorted(p.name.removesuffix("_concepts.txt") for p in _vocab_dir().glob("*_concepts.txt"))


def vocabulary(name: str) -> tuple[list[str], list[str]]:
    """A built-in vocabulary's concepts and its prompt templates."""
    concepts = _vocab_dir() / f"{name}_concepts.txt"
    if not concepts.is_file():
        raise BadInput(f"no vocabulary {name!r}; built in: {', '.join(list_vocabularies())}")
    templates = _vocab_dir() / f"{name}_templates.txt"
    return _lines(concepts), (_lines(templates) if templates.is_file() else ["{}"])


def read_texts(path: Path) -> list[str]:
    """One text per non-empty line of a UTF-8 file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read texts from {path}: {e}") from None
    texts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not texts:
        raise BadInput(f"{path} holds no texts")
    return texts


def text_vectors(engine: Engine, texts: list[str]) -> np.ndarray:
    """Embeddings of `texts`, from the index's cache where present; new ones are cached."""
    weights = engine.record.identity.weights
    keys = [hashlib.blake2b(f"{weights}\0{t}".encode(), digest_size=16).digest() for t in texts]
    cached = engine.catalog.cached_text_vectors(keys)
    missing = [i for i, key in enumerate(keys) if key not in cached]
    if missing:
        fresh = engine.encode_texts([texts[i] for i in missing])
        new = {keys[i]: vector for i, vector in zip(missing, fresh, strict=True)}
        engine.catalog.cache_text_vectors(new)
        cached.update(new)
    return np.stack([cached[key] for key in keys])


def concept_vectors(engine: Engine, concepts: list[str], templates: list[str]) -> np.ndarray:
    """One vector per concept: the normalised mean over its prompt templates."""
    prompts = [template.replace("{}", concept) for concept in concepts for template in templates]
    vectors = text_vectors(engine, prompts).reshape(len(concepts), len(templates), -1).mean(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def best_texts(
    image_vector: np.ndarray, texts: list[str], vectors: np.ndarray, k: int
) -> list[TextHit]:
    scores = vectors @ image_vector
    order = np.argsort(-scores, kind="stable")[:k]
    return [TextHit(texts[i], float(scores[i])) for i in order]


def describe(
    engine: Engine,
    image: bytes,
    k: int = 5,
    vocab: str | None = None,
    texts_file: Path | None = None,
    corpus: bool = False,
) -> list[TextHit]:
    """The k texts that best match the image at path `image`, best first."""
    if k <= 0:
        raise BadInput(f"k must be at least 1, got {k}")
    if sum((vocab is not None, texts_file is not None, corpus)) > 1:
        raise BadInput("choose one text source: --vocab, --texts or --corpus")
    vector = engine.encode_images([image])[0]
    if corpus:
        return corpus_search(engine, vector, k)
    if texts_file is not None:
        texts = read_texts(texts_file)
        return best_texts(vector, texts, text_vectors(engine, texts), k)
    concepts, templates = vocabulary(vocab or DEFAULT_VOCAB)
    return best_texts(vector, concepts, concept_vectors(engine, concepts, templates), k)


def add_corpus(
    engine: Engine,
    texts: list[str],
    batch: int = 256,
    progress: Callable[[Progress], None] | None = None,
) -> int:
    """Embed and store new corpus texts, then rebuild the corpus index; returns how many new."""
    added = 0
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        added += engine.catalog.add_texts(list(zip(chunk, engine.encode_texts(chunk), strict=True)))
        if progress:
            progress(Progress("embedding texts", start + len(chunk), len(texts), "texts"))
    ids, _, vectors = engine.catalog.text_corpus()
    VectorStore.build(ids, vectors).save(engine.directory, TEXTS_FILE)
    return added


def corpus_search(engine: Engine, image_vector: np.ndarray, k: int) -> list[TextHit]:
    if not (engine.directory / TEXTS_FILE).exists():
        raise BadInput("this index has no caption corpus: add one with `photoseek texts add FILE`")
    store = VectorStore.load(engine.directory, engine.record.dim, TEXTS_FILE)
    scores, ids = store.search(image_vector[None, :], k)
    found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    texts = engine.catalog.texts_by_id([i for i, _ in found])
    return [TextHit(texts[i], s) for i, s in found]


def _vocab_dir() -> Path:
    return data_dir() / "vocab"


def _lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]
