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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer import atomic
from indexer.store import centroid_scan, fast_scan, index_choice, index_training
from indexer.store.flat_scan import FlatVectors, read_flat, rescore, search_flat
from indexer.store.index_choice import IndexChoice, available_memory, default_budget
from indexer.store.index_tuning import Exact, Tuning, tune
from indexer.store.vector_record import read_record, record_path

if TYPE_CHECKING:  # a query's reader must not pull SQLAlchemy in through this module
    import faiss

    from indexer.store.catalog import Catalog


class _Faiss:  # faiss, imported on first use: a cold query's Flat scan never pays its ~0.2 s
    def __getattr__(self, name: str) -> object:
        import faiss

        return getattr(faiss, name)


if not TYPE_CHECKING:
    faiss = _Faiss()

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"  # the images; a caption corpus lives in TEXTS_FILE
TEXTS_FILE = "texts.faiss"
# Below this many vectors exact search is both fast and exact; above, an inverted file of full
# vectors or of PQ codes, whichever the memory budget allows (`indexer.store.index_choice`).
EXACT_LIMIT = 100_000
# Vectors read from the catalog and added at a time while building: never the whole matrix.
BUILD_CHUNK = 50_000
# The centroid graph's search depth while a build adds vectors (tuning sets it for queries after):
# the graph finds each added vector's list, and at a query's depth (hundreds) assigning 10M
# vectors takes longer than the k-means. 16 is faiss' default, which autofaiss builds with.
ADD_EF_SEARCH = 16
# A file larger than this share of the memory available now is memory-mapped on load (pages
# come from disk as searches touch them) rather than read whole.
MMAP_SHARE = 0.5
# An inverted file is trained again once the collection is this many times larger (or smaller)
# than what it was trained on: its lists then hold far more (or fewer) vectors than planned.
RETRAIN_FACTOR = 4
# A filter passing at most this many ids is answered by an exact scan of them (every list
# probed): cheap for so few, and the only way to be sure k come back whenever k pass.
SCAN_LIMIT = 50_000
WIDEN = 4  # lists probed again, times as many, when too few came back
# The GPU only pays for its copy of the index in a long-lived process (the server), on a
# collection large enough that a CPU scan is slower; faiss-gpu refuses k (and nprobe) above 2048.
GPU_MIN_VECTORS = 200_000
GPU_MAX_K = 2048


def choose_index(count: int, dim: int = 512, budget: int | None = None) -> IndexChoice:
    """The index for `count` vectors of `dim` within `budget` bytes (default: a share of RAM)."""
    return index_choice.choose(count, dim, budget or default_budget(), EXACT_LIMIT)


def gpu_worthwhile(enabled: bool, count: int, k: int, gpus: int) -> bool:
    """Whether a search goes to the GPU: only where the caller asked (a long-lived process), a
    GPU is there, the collection is large enough and k is within faiss-gpu's limit."""
    return enabled and gpus > 0 and count >= GPU_MIN_VECTORS and k <= GPU_MAX_K


class VectorStore:
    """A FAISS index with catalog ids, loaded from and saved to an index directory.

    `generation`: the catalog generation the loaded file reflects (None: unknown). `trained_for`:
    how many vectors its inverted file was trained on. `gpu`: whether searches may use a GPU
    copy (set by long-lived processes only; a cold CLI query would pay the copy every time).
    `refine`: a PQ index's shortlist of refine*k is re-scored with exact vectors when a search
    is given them. `recall`: recall@10 measured when it was tuned (`recall_se`: the standard
    error of that measurement). A memory-mapped store is read-only, and so is one loaded as
    plain arrays (`load(scan=True)`), searched with numpy.
    """

    def __init__(
        self,
        index: faiss.Index | None,
        dim: int,
        trained_for: int = 0,
        generation: int | None = None,
        flat: FlatVectors | None = None,
    ) -> None:
        self._index = index
        self.flat = flat  # a Flat file's arrays, searched without faiss
        self.dim = dim
        self.trained_for = trained_for
        self.generation = generation
        self.gpu = False
        self._gpu_index: faiss.Index | None = None
        self.factory: str | None = None
        self.refine = 0
        self.recall: float | None = None
        self.recall_se: float | None = None
        self.mapped = False

    @classmethod
    def empty(cls, dim: int, count_hint: int = 0, choice: IndexChoice | None = None) -> VectorStore:
        choice = choice or choose_index(count_hint, dim)
        index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
        store = cls(index, dim)
        store.factory = choice.factory
        if choice.nprobe:
            store.set_search(choice.nprobe, choice.ef_search, choice.refine)
        return store

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray) -> VectorStore:
        """An index of the right kind for this many vectors, trained and tuned if it needs to
        be (vectors in memory: for a catalog's, `build_streaming` reads them a chunk at a time)."""
        order = np.argsort(ids, kind="stable")
        held = np.ascontiguousarray(vectors[order], np.float32)
        ids = ids.astype(np.int64)[order]
        return build_streaming(ids, held.shape[1], lambda some: held[np.searchsorted(ids, some)])

    @classmethod
    def load(
        cls,
        directory: Path,
        dim: int,
        filename: str = VECTORS_FILE,
        mmap: bool | None = None,
        scan: bool = False,
    ) -> VectorStore:
        """The saved store, or an empty one. `mmap`: map the file instead of reading it (None:
        when it is larger than MMAP_SHARE of the memory available now). `scan`: read a Flat
        file as plain arrays, searched with numpy, for a process that answers one query and
        need not import faiss (any other file is read by faiss)."""
        path = directory / filename
        if not path.exists():
            return cls.empty(dim)
        size = path.stat().st_size
        if mmap is None:
            mmap = size > MMAP_SHARE * available_memory()
        record = read_record(directory, filename, size)
        generation = record.get("generation")
        generation = generation if isinstance(generation, int) else None
        flat = read_flat(path, dim) if scan and not mmap else None  # mapped: faiss maps it
        if flat is not None:
            return cls(None, dim, len(flat.ids), generation, flat)
        index = faiss.read_index(str(path), _mmap_flags(record) if mmap else 0)
        trained_for = _int(record.get("trained_for")) or int(index.ntotal)
        store = cls(index, index.d, trained_for, generation)
        store.mapped = mmap
        factory = record.get("factory")
        store.factory = factory if isinstance(factory, str) else None
        store.recall = _float(record.get("recall"))
        store.recall_se = _float(record.get("recall_se"))
        if not store.is_exact():
            store.set_search(
                _int(record.get("nprobe")) or store.nprobe,
                _int(record.get("ef_search")) or store.ef_search,
                _int(record.get("refine")),
            )
        return store

    @property
    def index(self) -> faiss.Index:
        """The faiss index; one loaded for a scan builds it from its arrays on first use."""
        if self._index is None:
            self._index = faiss.index_factory(self.dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
            if self.flat is not None:
                self._index.add_with_ids(self.flat.vectors, self.flat.ids)
        return self._index

    def __len__(self) -> int:
        return len(self.flat.ids) if self.flat is not None else int(self.index.ntotal)

    def is_exact(self) -> bool:
        return self.flat is not None or isinstance(self.index, faiss.IndexIDMap2 | faiss.IndexIDMap)

    def kind(self) -> str:
        """flat, ivf or pq, as `IndexChoice.kind` names them."""
        if self.is_exact():
            return "flat"
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))
        return "pq" if isinstance(ivf, faiss.IndexIVFPQ | faiss.IndexIVFPQFastScan) else "ivf"

    @property
    def nprobe(self) -> int:
        return 0 if self.is_exact() else int(faiss.extract_index_ivf(self.index).nprobe)

    @property
    def ef_search(self) -> int:
        hnsw = self._hnsw()
        return int(hnsw.hnsw.efSearch) if hnsw is not None else 0

    def set_search(self, nprobe: int, ef_search: int, refine: int) -> None:
        """Lists probed, the centroid graph's search depth (if it has one), the shortlist."""
        faiss.extract_index_ivf(self.index).nprobe = nprobe
        hnsw = self._hnsw()
        if hnsw is not None and ef_search:
            hnsw.hnsw.efSearch = ef_search
        self.refine = refine
        self._gpu_index = None

    def _hnsw(self) -> faiss.IndexHNSW | None:
        if self.is_exact():
            return None
        quantizer = faiss.downcast_index(faiss.extract_index_ivf(self.index).quantizer)
        return quantizer if isinstance(quantizer, faiss.IndexHNSW) else None

    def ids(self) -> np.ndarray:
        """Every id in the index, ascending."""
        if self.flat is not None:
            return np.sort(self.flat.ids)
        if isinstance(self.index, faiss.IndexIDMap2 | faiss.IndexIDMap):
            ids = faiss.vector_to_array(self.index.id_map)
        else:
            ids = _ivf_ids(faiss.extract_index_ivf(self.index))
        return np.sort(ids.astype(np.int64))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._writable()
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
            self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._writable()
            self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))
            self._gpu_index = None

    def _writable(self) -> None:
        if self.mapped:  # faiss aborts the process on a write to a mapped file
            raise RuntimeError("a memory-mapped vector store is read-only")
        if self.flat is not None:
            raise RuntimeError("a vector store loaded for a scan is read-only")

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        exact: Exact | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row, among `allowed` ids if given and never among
        `excluded` ones; -1 ids pad. k come back whenever k ids pass. `exact` (sorted ids ->
        their vectors) re-scores a PQ index's shortlist, so that scores are exact."""
        queries = np.ascontiguousarray(queries, np.float32)
        if self.flat is not None:
            return search_flat(self.flat, queries, k, allowed, excluded)
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
        if not (self.refine and exact is not None):
            return self._search_ivf(queries, k, selector, passing)
        # Every passing id when a filter leaves few: re-scored exactly, the answer is exact.
        narrow = selector is not None and passing <= SCAN_LIMIT
        shortlist = max(k * self.refine, passing if narrow else 0)
        _, ids = self._search_ivf(queries, shortlist, selector, passing)
        return rescore(queries, ids, exact, k)

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
        index = self._search_index(k)
        if index is not self.index and selector is None and nprobe == ivf.nprobe:
            scores, ids = index.search(queries, k)  # the GPU copy
        else:
            scores, ids = self._probe(queries, k, selector, nprobe)
        # The probed lists may hold fewer than k that pass: probe more, up to all of them
        # (which finds them), widening step by step: a shortlist a little longer than the lists
        # probed must not cost a scan of every list.
        while nprobe < ivf.nlist and (ids >= 0).sum(axis=1).min() < min(k, passing):
            nprobe = min(ivf.nlist, nprobe * WIDEN)
            scores, ids = self._probe(queries, k, selector, nprobe)
        return scores, ids

    def _probe(
        self, queries: np.ndarray, k: int, selector: faiss.IDSelector | None, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search `nprobe` lists; a centroid graph is searched at least that deep (or it finds
        fewer lists than asked), or its centroids scanned when that is cheaper."""
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if selector is not None:
            params.sel = selector
        fast_scan.choose(self.index, len(queries))
        hnsw, nlist = self._hnsw(), faiss.extract_index_ivf(self.index).nlist
        if hnsw is not None and centroid_scan.scan_is_cheaper(max(self.ef_search, nprobe), nlist):
            return centroid_scan.search(self.index, hnsw, queries, k, params)
        # Referenced by params: alive until the search ends. (faiss' stubs lack the class.)
        graph = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        if (ef := self.ef_search) and nprobe > ef:
            graph.efSearch = nprobe
            params.quantizer_params = graph
        return self.index.search(queries, k, params=params)

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
            "index_type": type(self.index).__name__,
            "factory": self.factory,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "refine": self.refine,
            "recall": self.recall,
            "recall_se": self.recall_se,
        }
        atomic.write_text(record_path(directory, filename), json.dumps(record) + "\n")
        self.generation = generation


def _mmap_flags(record: dict[str, object]) -> int:
    """How to map a file: as flat codes when its record says so, else as an inverted file
    (which maps the lists and reads anything else); faiss refuses both flags at once for an
    inverted file."""
    if record.get("index_type") in ("IndexIDMap2", "IndexIDMap"):
        return faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


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


def build_streaming(
    ids: np.ndarray, dim: int, read: Exact, budget: int | None = None, chunk: int = BUILD_CHUNK
) -> VectorStore:
    """A store of the right kind for `ids` (ascending), reading their vectors `chunk` at a time
    through `read`: trained on a sample, filled in chunks, then tuned on held-out queries."""
    choice = choose_index(len(ids), dim, budget)
    store = VectorStore.empty(dim, choice=choice)
    if not store.index.is_trained:
        sample = np.sort(
            np.random.default_rng(0).choice(
                ids, index_choice.training_size(choice, len(ids)), False
            )
        )
        log.info("training %s on %d of %d vectors", choice.factory, len(sample), len(ids))
        index_training.fewer_iterations(store.index)
        store.index.train(np.ascontiguousarray(read(sample), np.float32))
        store.trained_for = len(ids)
    if store._hnsw() is not None:  # the graph assigns each added vector to its list
        store.set_search(choice.nprobe, ADD_EF_SEARCH, choice.refine)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        store.add(part, read(part))
    if len(store):
        retune(store, ids, read, chunk)
    return store


def retune(
    store: VectorStore, ids: np.ndarray, read: Exact, chunk: int = BUILD_CHUNK
) -> Tuning | None:
    """Tune an inverted file's search settings on held-out queries from `ids` (its own, ascending,
    read through `read`), as a build does last, or again without a rebuild (None for an exact
    index: nothing to tune). The settings and the recall are the store's until it is saved."""
    if store.is_exact():
        return None
    nlist = faiss.extract_index_ivf(store.index).nlist
    hnsw, refines = store._hnsw() is not None, store.kind() == "pq"
    tuning = tune(store, nlist, hnsw, refines, read, ids, chunk=chunk)
    store.recall, store.recall_se = tuning.recall, tuning.recall_se
    return tuning


def outgrown(store: VectorStore, count: int, budget: int | None = None) -> bool:
    """Whether `store` is the wrong kind of index for `count` vectors: exact where an inverted
    file is due or the reverse, full vectors where only PQ codes fit the budget (or the reverse),
    or an inverted file trained for a collection RETRAIN_FACTOR times smaller or larger (or
    with a list count that far from today's choice)."""
    wanted = choose_index(count, store.dim, budget)
    if store.kind() != wanted.kind:
        return True
    if store.is_exact():
        return False
    trained = max(store.trained_for, 1)
    nlist = faiss.extract_index_ivf(store.index).nlist
    lists_off = max(nlist / wanted.nlist, wanted.nlist / nlist) >= RETRAIN_FACTOR
    return lists_off or not trained / RETRAIN_FACTOR < count < trained * RETRAIN_FACTOR


def sync(
    store: VectorStore, catalog: Catalog, budget: int | None = None
) -> tuple[VectorStore, bool]:
    """Make `store` hold exactly the catalog's live vectors; rebuild (and train) when it has
    outgrown its kind. For the indexer only: readers never train.

    Returns the (possibly new) store and whether it changed.
    """
    live = catalog.live_ids()
    if outgrown(store, len(live), budget):
        return rebuild(catalog, store.dim, live, budget), True
    have = store.ids()
    extra = np.setdiff1d(have, live, assume_unique=True)
    missing = np.setdiff1d(live, have, assume_unique=True)
    store.remove(extra)
    for start in range(0, len(missing), BUILD_CHUNK):
        chunk = missing[start : start + BUILD_CHUNK]
        store.add(chunk, catalog.vectors(chunk, store.dim))
    return store, bool(len(extra) or len(missing))


def refresh(
    directory: Path,
    catalog: Catalog,
    dim: int,
    store: VectorStore | None = None,
    budget: int | None = None,
) -> VectorStore:
    """Bring the index directory's vector file (or `store`, its copy in memory) in line with
    its catalog, saving it with the generation it now reflects if anything is new. Only for the
    writer (it holds the index's lock: no commit can come between the generation and the rows).
    `budget`: the memory the index may take (default: a share of RAM)."""
    generation = catalog.generation()
    for target in (directory / VECTORS_FILE, record_path(directory, VECTORS_FILE)):
        atomic.remove_leftovers(target)  # from a save killed before its rename
    store = store or VectorStore.load(directory, dim, mmap=False)
    store, changed = sync(store, catalog, budget)
    if changed or store.generation != generation or not (directory / VECTORS_FILE).exists():
        store.save(directory, generation=generation)
    return store


def rebuild(catalog: Catalog, dim: int, live: np.ndarray, budget: int | None = None) -> VectorStore:
    """A fresh index of the right kind for the catalog's live vectors, read in chunks."""
    return build_streaming(live, dim, lambda ids: catalog.vectors(ids, dim), budget)
