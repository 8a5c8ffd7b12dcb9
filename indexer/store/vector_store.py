"""The FAISS index of an index directory: ids are catalog row ids, scores are inner products.

Vectors are L2-normalised, so inner product is cosine similarity. The index is derived data:
`sync` brings it in line with the catalog (which holds every embedding), and `save` writes it
atomically, so a crash at any point leaves a file that is merely stale, never corrupt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer import atomic
from indexer.store.catalog import Catalog

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"  # the images; a caption corpus lives in TEXTS_FILE
TEXTS_FILE = "texts.faiss"
# Below this many vectors exact search is both fast and exact; above, an IVF index (autofaiss'
# rule of thumb: about 4*sqrt(n) lists, at least 39 training points per list).
EXACT_LIMIT = 100_000


@dataclass(frozen=True)
class IndexChoice:
    """Which FAISS index to build for a collection size."""

    factory: str  # a faiss.index_factory string
    nprobe: int = 0  # lists searched per query, for IVF


def choose_index(count: int) -> IndexChoice:
    """Exact search below EXACT_LIMIT vectors; an inverted file above."""
    if count < EXACT_LIMIT:
        return IndexChoice("IDMap2,Flat")
    lists = 1 << max(8, int(np.log2(4 * np.sqrt(count))))
    return IndexChoice(f"IVF{lists},Flat", nprobe=max(16, lists // 64))


class VectorStore:
    """A FAISS index with catalog ids, loaded from and saved to an index directory."""

    def __init__(self, index: faiss.Index, dim: int) -> None:
        self.index = index
        self.dim = dim
        self._gpu_index: faiss.Index | None = None

    @classmethod
    def empty(cls, dim: int, count_hint: int = 0) -> VectorStore:
        choice = choose_index(count_hint)
        index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
        if choice.nprobe:
            faiss.extract_index_ivf(index).nprobe = choice.nprobe
        return cls(index, dim)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray) -> VectorStore:
        """An index of the right kind for this many vectors, trained if it needs to be."""
        store = cls.empty(vectors.shape[1], len(ids))
        if not store.index.is_trained:
            log.info("training %s on %d vectors", choose_index(len(ids)).factory, len(ids))
            store.index.train(np.ascontiguousarray(vectors, np.float32))
        store.add(ids, vectors)
        return store

    @classmethod
    def load(cls, directory: Path, dim: int, filename: str = VECTORS_FILE) -> VectorStore:
        path = directory / filename
        if not path.exists():
            return cls.empty(dim)
        index = faiss.read_index(str(path))
        return cls(index, index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """Every id in the index, ascending."""
        if isinstance(self.index, faiss.IndexIDMap2 | faiss.IndexIDMap):
            ids = faiss.vector_to_array(self.index.id_map)
        else:
            ids = _ivf_ids(faiss.extract_index_ivf(self.index))
        return np.sort(ids.astype(np.int64))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
            self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))
            self._gpu_index = None

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row, among `allowed` ids if given; -1 ids pad."""
        queries = np.ascontiguousarray(queries, np.float32)
        if allowed is None:
            return self._search_index().search(queries, k)
        # Held in a local until the search returns: `params.sel` is only a C++ pointer to it.
        selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
        if isinstance(self.index, faiss.IndexIDMap2 | faiss.IndexIDMap):
            params = faiss.SearchParameters()
        else:
            # A selective filter leaves few candidates per list: probe more lists, up to all.
            ivf = faiss.extract_index_ivf(self.index)
            share = max(len(allowed) / max(len(self), 1), 1e-9)
            params = faiss.SearchParametersIVF()
            params.nprobe = min(ivf.nlist, int(np.ceil(ivf.nprobe / share)))
        params.sel = selector
        return self.index.search(queries, k, params=params)

    def _search_index(self) -> faiss.Index:
        """The GPU copy when faiss-gpu sees a GPU, else the CPU index."""
        if self._gpu_index is None:
            self._gpu_index = self.index
            if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and len(self):
                self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_index

    def save(self, directory: Path, filename: str = VECTORS_FILE) -> None:
        """Write atomically (`indexer.atomic`): a crash leaves the old file or the new one."""
        with atomic.replacing(directory / filename) as temp:
            faiss.write_index(self.index, str(temp))


def _ivf_ids(ivf: faiss.IndexIVF) -> np.ndarray:
    """The ids in an inverted file's lists, in list order."""
    invlists = ivf.invlists
    if invlists is None:  # an index whose lists were never attached holds nothing
        return np.empty(0, dtype=np.int64)
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(k), invlists.list_size(k)).copy()
        for k in range(invlists.nlist)
        if invlists.list_size(k)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def sync(store: VectorStore, catalog: Catalog) -> tuple[VectorStore, bool]:
    """Make `store` hold exactly the catalog's live vectors; rebuild when the size class changes.

    Returns the (possibly new) store and whether it changed.
    """
    live = catalog.live_ids()
    wanted = choose_index(len(live))
    exact_now = isinstance(store.index, faiss.IndexIDMap2)
    if exact_now != (wanted.factory == "IDMap2,Flat"):
        return rebuild(catalog, store.dim, live), True
    have = store.ids()
    extra = np.setdiff1d(have, live, assume_unique=True)
    missing = np.setdiff1d(live, have, assume_unique=True)
    store.remove(extra)
    for start in range(0, len(missing), 50_000):
        chunk = missing[start : start + 50_000]
        store.add(chunk, catalog.vectors(chunk, store.dim))
    return store, bool(len(extra) or len(missing))


def rebuild(catalog: Catalog, dim: int, live: np.ndarray) -> VectorStore:
    """A fresh index of the right kind for the catalog's live vectors."""
    return VectorStore.build(live, catalog.vectors(live, dim))
