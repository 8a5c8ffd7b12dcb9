"""Exact search with numpy: a saved Flat vector file read without faiss, a shortlist re-scored.

A cold query over a Flat file (every collection up to `vector_store.EXACT_LIMIT` images) scans
it with one matrix product, ~10 ms for 100,000 vectors, where importing faiss alone costs
~0.2 s. The FAISS file stays the one format on disk, so nothing beside it can go stale: this
reads the layout faiss' `write_index` gives an `IndexIDMap2` (or `IndexIDMap`) over an
`IndexFlatIP` — a header per index, the float vectors, the int64 ids — and checks every field
and the file's exact length against it; a file it does not recognise is left to faiss.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.store.index_tuning import Exact

# faiss' index header: fourcc, d, ntotal, two unused fields, is_trained, metric (written
# field by field, unpadded, in the machine's byte order).
_HEADER = np.dtype(
    [("fourcc", "S4"), ("d", "i4"), ("ntotal", "i8"), ("unused", "i8", 2), ("trained", "u1"),
     ("metric", "i4")]
)  # fmt: skip
_ID_MAPS = (b"IxM2", b"IxMp")  # IndexIDMap2, IndexIDMap
_FLAT_IP = b"IxFI"
_INNER_PRODUCT = 0  # faiss.METRIC_INNER_PRODUCT; a metric above 1 would add a field
_COUNT = np.dtype("u8")  # the length written before each vector of values


@dataclass(frozen=True)
class FlatVectors:
    """A Flat file's contents: ids [n] int64 and their vectors [n, d] float32, in file order."""

    ids: np.ndarray
    vectors: np.ndarray


def read_flat(path: Path, dim: int) -> FlatVectors | None:
    """The vectors of a Flat file of `dim`-sized vectors; None for any other file (an inverted
    file, another layout or metric, a truncated or padded file: faiss then reads it)."""
    try:
        with open(
            path, "rb"
        ) as f:  # one handle: a file renamed over this one meanwhile is not read
            head = f.read(2 * _HEADER.itemsize + _COUNT.itemsize)
            if len(head) < 2 * _HEADER.itemsize + _COUNT.itemsize:
                return None
            outer, inner = np.frombuffer(head, _HEADER, 2)
            (values,) = np.frombuffer(head, _COUNT, 1, 2 * _HEADER.itemsize)
            n = int(outer["ntotal"])
            if not (
                outer["fourcc"] in _ID_MAPS and inner["fourcc"] == _FLAT_IP
                and outer["d"] == inner["d"] == dim and inner["ntotal"] == n >= 0
                and outer["metric"] == inner["metric"] == _INNER_PRODUCT
                and int(values) == n * dim
            ):  # fmt: skip
                return None
            vectors = np.empty((n, dim), np.float32)
            ids = np.empty(n, np.int64)
            if not (_read_into(f, vectors) and _read_into(f, np.empty(1, _COUNT), n)
                    and _read_into(f, ids) and not f.read(1)):  # fmt: skip
                return None
    except OSError:
        return None
    return FlatVectors(ids, vectors)


def _read_into(f: io.BufferedReader, array: np.ndarray, expect: int | None = None) -> bool:
    """Fill `array` from the file; with `expect`, the one count read must equal it."""
    view = array.reshape(-1).view(np.uint8)
    if f.readinto(view.data) != view.size:
        return False
    return expect is None or int(array[0]) == expect


def search_flat(
    flat: FlatVectors,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    excluded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query row by inner product, among `allowed` ids if given and
    never among `excluded` ones: what `VectorStore.search` answers for a Flat file."""
    # faiss ranks equal scores (a photo and its copy) by later position in the file first:
    # read right to left, the stable sort below does the same.
    ids, scores = flat.ids[::-1], (queries @ flat.vectors.T)[:, ::-1]
    keep = None if allowed is None else np.isin(ids, allowed)
    if excluded is not None and len(excluded):
        outside = ~np.isin(ids, excluded)
        keep = outside if keep is None else keep & outside
    if keep is not None:
        ids, scores = ids[keep], scores[:, keep]
    return top_k(scores, np.broadcast_to(ids, scores.shape), k)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row of (scores, ids) [n, m], best first; -inf scores count as
    missing (id -1) and rows with fewer than k are padded with -inf and -1."""
    # A stable sort of the whole row: ties come in column order, whatever k (~1 ms for 10,000).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(ids, order, axis=1), -1)
    if top_ids.shape[1] < k:
        pad = ((0, 0), (0, k - top_ids.shape[1]))
        top_scores = np.pad(top_scores, pad, constant_values=-np.inf)
        top_ids = np.pad(top_ids, pad, constant_values=-1)
    return top_scores, top_ids.astype(np.int64)


def rescore(
    queries: np.ndarray, shortlist: np.ndarray, exact: Exact, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top k of each row's shortlist by exact inner product (-1 ids pad, and stay last)."""
    unique = np.unique(shortlist[shortlist >= 0])
    scores = queries @ exact(unique).T if len(unique) else np.empty((len(queries), 0), np.float32)
    where = np.searchsorted(unique, np.maximum(shortlist, 0)).clip(max=max(len(unique) - 1, 0))
    rows = np.arange(len(queries))[:, None]
    picked = scores[rows, where] if len(unique) else np.zeros(shortlist.shape, np.float32)
    return top_k(np.where(shortlist >= 0, picked, -np.inf), shortlist, k)
