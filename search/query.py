"""Query terms: text or image, weighted, added or subtracted — `beach + sunset - people`.

Grammar of the words after `photoseek search`: `+` and `-` separate terms (a leading `-`
subtracts the first term); the words between operators form one term; a term that names an
existing image file is an image term. The query vector is the weighted sum of positive terms
minus negative terms, L2-normalised.

A term may start with a weight `W:` (`2:beach`, `0.5:red car`, `2:"3d render"`, `2:photo.jpg`),
but only where what follows the colon is a letter, a quoted text or an existing image file: so
`10:30 sunset`, `16:9` and `4:3 crop` stay text, as a user typing a time or a ratio means them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.errors import BadInput
from indexer.media.discovery import EXTENSIONS, extension

_WEIGHT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.DOTALL)
_WEIGHED = re.compile(r"[^\W\d_]", re.UNICODE)  # a letter: what a weight's text must start with
_QUOTED = re.compile(r"^([\"'])(.+)\1$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    """One query term: text or an image path, with a signed weight."""

    text: str | None = None
    image: bytes | None = None
    weight: float = 1.0


def parse_terms(words: Sequence[str], images: Sequence[str] = ()) -> list[Term]:
    """Terms from the command's words and its --image paths."""
    terms: list[Term] = []
    current: list[str] = []  # the words of the term being read
    sign = 1.0

    def flush() -> None:
        if current:
            terms.append(_term(" ".join(current), sign))
            current.clear()

    for word in words:
        if word in ("+", "-"):
            flush()
            sign = 1.0 if word == "+" else -1.0
        else:
            current.append(word)
    flush()
    for path in images:
        terms.append(_image_term(path, 1.0, explicit=True))
    if not terms:
        raise BadInput("empty query: give text, an image path, or --image PATH")
    if all(term.weight <= 0 for term in terms):
        raise BadInput("a query needs at least one positive term")
    return terms


def _term(text: str, sign: float) -> Term:
    text = text.strip()
    if not text:
        raise BadInput("empty query term")
    weight, text = _weighed(text)
    if _is_image(text):
        return _image_term(text, sign * weight, explicit=False)
    return Term(text=text, weight=sign * weight)


def _weighed(text: str) -> tuple[float, str]:
    """(weight, text) of a term: `W:` is a weight only before a letter, a quoted text or an
    existing image file; anything else (`10:30`, `16:9`) is the term's own text, weight 1."""
    match = _WEIGHT.match(text)
    if match is None:
        return 1.0, text
    weight, rest = float(match.group(1)), match.group(2)
    quoted = _QUOTED.match(rest)
    if quoted and quoted.group(2).strip():
        return weight, quoted.group(2).strip()
    if _WEIGHED.match(rest) or _is_image(rest):
        return weight, rest
    return 1.0, text


def _is_image(text: str) -> bool:
    return os.path.isfile(text) and extension(os.fsencode(text)) in EXTENSIONS


def _image_term(path: str, weight: float, explicit: bool) -> Term:
    if explicit and not os.path.isfile(path):
        raise BadInput(f"query image not found: {path}")
    return Term(image=os.fsencode(os.path.abspath(path)), weight=weight)


def combine(
    terms: Sequence[Term],
    encode_texts: Callable[[list[str]], np.ndarray],
    encode_images: Callable[[list[bytes]], np.ndarray],
) -> np.ndarray:
    """The query vector: normalised weighted sum of the terms' embeddings."""
    texts = [(t.text, t.weight) for t in terms if t.text is not None]
    images = [(t.image, t.weight) for t in terms if t.image is not None]
    parts = []
    if texts:
        parts.append(encode_texts([text for text, _ in texts]) * _weights(texts))
    if images:
        parts.append(encode_images([image for image, _ in images]) * _weights(images))
    vector = np.sum(np.concatenate(parts), axis=0)
    norm = np.linalg.norm(vector)
    if norm < 1e-6:
        raise BadInput("the query terms cancel out")
    return (vector / norm).astype(np.float32)


def _weights(terms: Sequence[tuple[object, float]]) -> np.ndarray:
    """The terms' weights as a column, to scale their embeddings' rows."""
    return np.array([[weight] for _, weight in terms], dtype=np.float32)
