"""The FAISS index of an index directory: ids are catalog row ids, scores are inner products.

Vectors are L2-normalised, so inner product is cosine similarity. The index is derived data:
`sync` brings it in line with the catalog (which holds every embedding), and `save` writes it
atomically, so a crash at any point leaves a file that is merely stale, never corrupt. Beside it
a small record (`vectors.json`) says which catalog generation the file reflects and how many
vectors its inverted file was trained on; readers search a stale file plus the catalog's newer
rows (`indexer.store.live_view`), and only indexing trains or rewrites the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from indexer import atomic

if TYPE_CHECKING:  # a query's reader must not pull SQLAlchemy in through this module
    from indexer.store.catalog import Catalog

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"  # the images; a caption corpus lives in TEXTS_FILE
TEXTS_FILE = "texts.faiss"
# Below this many vectors exact search is both fast and exact; above, an IVF index (autofaiss'
# rule of thumb: about 4*sqrt(n) lists, at least 39 training points per list).
EXACT_LIMIT = 100_000
# An inverted file is trained again once the collection is this many times larger (or smaller)
# than what it was trained on: its lists then hold far more (or fewer) vectors than planned.
RETRAIN_FACTOR = 4
# A filter passing at most this many ids is answered by an exact scan of them (every list
# probed): cheap for so few, and the only way to be sure k come back whenever k pass.
SCAN_LIMIT = 50_000
# The GPU only pays for its copy of the index in a long-lived process (the server), on a
# collection large enough that a CPU scan is slower; faiss-gpu refuses k (and nprobe) above 2048.
GPU_MIN_VECTORS = 200_000
GPU_MAX_K = 2048


@dataclass(frozen=True)
class IndexChoice:
    """Which FAISS index to build for a collection size."""

    factory: str  # a faiss.index_factory string
    nprobe: int = 0  # lists searched per query, for IVF
    nlist: int = 0  # inverted lists, for IVF


def choose_index(count: int) -> IndexChoice:
    """Exact search below EXACT_LIMIT vectors; an inverted file above."""
    if count < EXACT_LIMIT:
        return IndexChoice("IDMap2,Flat")
    lists = 1 << max(8, int(np.log2(4 * np.sqrt(count))))
    return IndexChoice(f"IVF{lists},Flat", nprobe=max(16, lists // 64), nlist=lists)


def gpu_worthwhile(enabled: bool, count: int, k: int, gpus: int) -> bool:
    """Whether a search goes to the GPU: only where the caller asked (a long-lived process), a
    GPU is there, the collection is large enough and k is within faiss-gpu's limit."""
    return enabled and gpus > 0 and count >= GPU_MIN_VECTORS and k <= GPU_MAX_K


def record_path(directory: Path, filename: str) -> Path:
    """The record beside a vector file: `vectors.faiss` -> `vectors.json`."""
    return directory / Path(filename).with_suffix(".json").name


class VectorStore:
    """A FAISS index with catalog ids, loaded from and saved to an index directory.

    `generation`: the catalog generation the loaded file reflects (None: unknown). `trained_for`:
    how many vectors its inverted file was trained on. `gpu`: whether searches may use a GPU
    copy (set by long-lived processes only; a cold CLI query would pay the copy every time).
    """

    def __init__(
        self, index: faiss.Index, dim: int, trained_for: int = 0, generation: int | None = None
    ) -> None:
        self.index = index
        self.dim = dim
        self.trained_for = trained_for
        self.generation = generation
        self.gpu = False
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
            store.trained_for = len(ids)
        store.add(ids, vectors)
        return store

    @classmethod
    def load(cls, directory: Path, dim: int, filename: str = VECTORS_FILE) -> VectorStore:
        path = directory / filename
        if not path.exists():
            return cls.empty(dim)
        index = faiss.read_index(str(path))
        record = _read_record(directory, filename, path.stat().st_size)
        trained_for = int(record.get("trained_for") or index.ntotal)
        return cls(index, index.d, trained_for, record.get("generation"))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def is_exact(self) -> bool:
        return isinstance(self.index, faiss.IndexIDMap2 | faiss.IndexIDMap)

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
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row, among `allowed` ids if given and never among
        `excluded` ones; -1 ids pad. k come back whenever k ids pass."""
        queries = np.ascontiguousarray(queries, np.float32)
        if allowed is not None and excluded is not None:
            allowed = np.setdiff1d(allowed, excluded)
        # Held in locals until the search returns: `params.sel` is only a C++ pointer to them.
        selector: faiss.IDSelector | None = None
        passing = len(self)
        if allowed is not None:
            selector, passing = faiss.IDSelectorBatch(allowed.astype(np.int64)), len(allowed)
        elif excluded is not None and len(excluded):
            stale = faiss.IDSelectorBatch(excluded.astype(np.int64))
            selector, passing = faiss.IDSelectorNot(stale), len(self) - len(excluded)
        if self.is_exact():
            if selector is None:
                return self._search_index(k).search(queries, k)
            params = faiss.SearchParameters()
            params.sel = selector
            return self.index.search(queries, k, params=params)
        return self._search_ivf(queries, k, selector, passing)

    def _search_ivf(
        self, queries: np.ndarray, k: int, selector: faiss.IDSelector | None, passing: int
    ) -> tuple[np.ndarray, np.ndarray]:
        ivf = faiss.extract_index_ivf(self.index)
        if selector is not None and passing <= SCAN_LIMIT:
            nprobe = ivf.nlist  # every list: exact among the few that pass
        else:
            # A selective filter leaves few candidates per list: probe more lists, up to all.
            share = max(passing / max(len(self), 1), 1e-9)
            nprobe = min(ivf.nlist, int(np.ceil(ivf.nprobe / share)))
        if selector is None and nprobe == ivf.nprobe:
            scores, ids = self._search_index(k).search(queries, k)
        else:
            scores, ids = _ivf_search(self.index, queries, k, selector, nprobe)
        # The probed lists may hold fewer than k that pass: probe them all, which finds them.
        if nprobe < ivf.nlist and (ids >= 0).sum(axis=1).min() < min(k, passing):
            scores, ids = _ivf_search(self.index, queries, k, selector, ivf.nlist)
        return scores, ids

    def _search_index(self, k: int) -> faiss.Index:
        """A GPU copy when it pays (`gpu_worthwhile`), else the CPU index."""
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if not gpu_worthwhile(self.gpu, len(self), k, gpus):
            return self.index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_index

    def save(
        self, directory: Path, filename: str = VECTORS_FILE, *, generation: int | None = None
    ) -> None:
        """Write atomically (`indexer.atomic`): a crash leaves the old file or the new one.

        Then its record, which names the file's size: a crash between the two leaves a record
        that does not describe the file, and readers treat its generation as unknown.
        """
        path = directory / filename
        with atomic.replacing(path) as temp:
            faiss.write_index(self.index, str(temp))
        record = {
            "generation": generation,
            "trained_for": self.trained_for,
            "vectors": len(self),
            "bytes": path.stat().st_size,
        }
        atomic.write_text(record_path(directory, filename), json.dumps(record) + "\n")
        self.generation = generation


def _read_record(directory: Path, filename: str, size: int) -> dict[str, int | None]:
    """The record of a vector file of `size` bytes; empty when missing or not about this file."""
    try:
        record = json.loads(record_path(directory, filename).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("bytes") != size:
        return {}
    return record


def _ivf_search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    selector: faiss.IDSelector | None,
    nprobe: int,
) -> tuple[np.ndarray, np.ndarray]:
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    if selector is not None:
        params.sel = selector
    return index.search(queries, k, params=params)


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


def outgrown(store: VectorStore, count: int) -> bool:
    """Whether `store` is the wrong kind of index for `count` vectors: exact where an inverted
    file is due or the reverse, or an inverted file trained for a collection RETRAIN_FACTOR
    times smaller or larger (or with a list count that far from today's choice)."""
    wanted = choose_index(count)
    if store.is_exact() != (wanted.nlist == 0):
        return True
    if store.is_exact():
        return False
    trained = max(store.trained_for, 1)
    nlist = faiss.extract_index_ivf(store.index).nlist
    lists_off = max(nlist / wanted.nlist, wanted.nlist / nlist) >= RETRAIN_FACTOR
    return lists_off or not trained / RETRAIN_FACTOR < count < trained * RETRAIN_FACTOR


def sync(store: VectorStore, catalog: Catalog) -> tuple[VectorStore, bool]:
    """Make `store` hold exactly the catalog's live vectors; rebuild (and train) when it has
    outgrown its kind. For the indexer only: readers never train.

    Returns the (possibly new) store and whether it changed.
    """
    live = catalog.live_ids()
    if outgrown(store, len(live)):
        return rebuild(catalog, store.dim, live), True
    have = store.ids()
    extra = np.setdiff1d(have, live, assume_unique=True)
    missing = np.setdiff1d(live, have, assume_unique=True)
    store.remove(extra)
    for start in range(0, len(missing), 50_000):
        chunk = missing[start : start + 50_000]
        store.add(chunk, catalog.vectors(chunk, store.dim))
    return store, bool(len(extra) or len(missing))


def refresh(
    directory: Path, catalog: Catalog, dim: int, store: VectorStore | None = None
) -> VectorStore:
    """Bring the index directory's vector file (or `store`, its copy in memory) in line with
    its catalog, saving it with the generation it now reflects if anything is new. Only for the
    writer (it holds the index's lock: no commit can come between the generation and the rows)."""
    generation = catalog.generation()
    for target in (directory / VECTORS_FILE, record_path(directory, VECTORS_FILE)):
        atomic.remove_leftovers(target)  # from a save killed before its rename
    store, changed = sync(store or VectorStore.load(directory, dim), catalog)
    if changed or store.generation != generation or not (directory / VECTORS_FILE).exists():
        store.save(directory, generation=generation)
    return store


def rebuild(catalog: Catalog, dim: int, live: np.ndarray) -> VectorStore:
    """A fresh index of the right kind for the catalog's live vectors."""
    return VectorStore.build(live, catalog.vectors(live, dim))
