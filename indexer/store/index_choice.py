"""Which FAISS index suits a collection: its size, its dimension and a memory budget.

In the spirit of autofaiss: exact search while it is cheap, an inverted file of full vectors
while those fit the budget, and beyond it an inverted file of product-quantised codes (rotated by
OPQ, its centroids found through an HNSW graph) whose shortlist is re-scored with the exact
vectors (the catalog's, read by id), which PQ codes alone cannot rank to recall 0.95. The codes
are FAISS fast-scan ones (`PQ{m}x4fs`: 4 bits per sub-vector, scanned 32 at a time with SIMD
shuffles): the scan of the probed lists is much of a query's time, and since the exact
re-scoring ranks the shortlist anyway, coarser codes that scan faster are the better trade.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from indexer.errors import BadInput

# The share of the machine's RAM an index may take by default: the server holds it beside the
# model, the rerank head and the catalog's page cache, and the indexer holds it plus a training
# sample and a decode pipeline, so a quarter leaves room for both on a 16-32 GB machine.
DEFAULT_RAM_SHARE = 0.25
# Inverted lists: 4*sqrt(n) rounded up to a power of two (autofaiss' low end of 4-16*sqrt(n):
# the fewer lists, the cheaper the k-means), never under 256 and never over MAX_LISTS. A k-means
# round costs training points x lists x dim, so with points in proportion to lists the training
# grows as lists squared: 8,192 lists cost a quarter of the 16,384 that 10M vectors' 4*sqrt(n)
# (12,649) rounds up to; past the cap the lists only grow longer, which fast-scan codes scan
# cheaply.
MIN_LISTS = 256
MAX_LISTS = 8192
# Training points per list: faiss warns below 39; more buys little for the k-means.
TRAIN_PER_LIST = 40
# The training set's cap (autofaiss caps it too): at MAX_LISTS, 32 points a list. A few tens of
# points per centroid place it as well as more do, and every point costs a pass over all lists.
MAX_TRAIN_POINTS = 1 << 18
# Fast-scan codes: the length of a sub-vector (each coded in 4 bits), finest first; the finest
# that fits the budget is chosen. At 1M (bench/vector_scale.py, the same lists and rotation)
# 4-float parts reached recall@10 0.956 re-scoring 16*k, 8-float ones needed 64*k for 0.954:
# the re-scoring reads from the catalog, so a shortlist four times longer costs more than a scan
# twice as long.
SUBVECTOR_LENGTHS = (4, 8, 16, 32, 64, 128)
PQ_BITS = 4
HNSW_LINKS = 32  # the centroid graph's links per node (autofaiss' IVF{k}_HNSW32)
# The shortlist re-scored exactly, times k, until tuning sets it from measured recall and
# latency: 4-bit codes order a list only roughly.
DEFAULT_REFINE = 16
ID_BYTES = 8
# IDMap2 keeps a reverse map besides the id array: about this many bytes per entry.
IDMAP2_ENTRY_BYTES = 48

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class IndexChoice:
    """Which FAISS index to build, and how to search it until tuning says otherwise."""

    factory: str  # a faiss.index_factory string
    nprobe: int = 0  # lists searched per query, for IVF
    nlist: int = 0  # inverted lists, for IVF
    pq_parts: int = 0  # PQ sub-vectors, each coded in PQ_BITS (0: full vectors)
    ef_search: int = 0  # HNSW search depth over the centroids (0: a flat quantizer)
    refine: int = 0  # shortlist of refine*k re-scored exactly (0: scores are already exact)

    @property
    def kind(self) -> str:
        """flat, ivf or pq: a store of another kind than wanted is rebuilt."""
        return "pq" if self.pq_parts else "ivf" if self.nlist else "flat"

    @property
    def code_bytes(self) -> int:
        """Bytes of one vector's PQ code (fast-scan packs two 4-bit parts a byte)."""
        return (self.pq_parts * PQ_BITS + 7) // 8


def machine_memory() -> int:
    """Physical RAM in bytes (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def default_budget() -> int:
    """The memory an index may take when no --max-index-memory is given."""
    return int((machine_memory() or 8 << 30) * DEFAULT_RAM_SHARE)


def parse_size(text: str) -> int:
    """`2G`, `512M`, `1.5GB`, `800MiB` or plain bytes -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise BadInput(f"--max-index-memory: {text!r} is not a size like 2G, 512M or 1.5GB")
    number, unit = float(match.group(1)), match.group(2).upper()
    size = int(number * (1 << (10 * " KMGT".index(unit or " "))))
    if size <= 0:
        raise BadInput("--max-index-memory must be more than 0")
    return size


def list_count(count: int) -> int:
    wanted = 1 << math.ceil(math.log2(4 * math.sqrt(max(count, 1))))
    return min(MAX_LISTS, max(MIN_LISTS, wanted))


def training_size(choice: IndexChoice, count: int) -> int:
    """How many vectors to train on: enough per list, never more than the collection or the cap."""
    return min(count, TRAIN_PER_LIST * max(choice.nlist, 1), MAX_TRAIN_POINTS)


def estimate_bytes(choice: IndexChoice, count: int, dim: int) -> int:
    """Resident bytes of the index for `count` vectors (codes, ids, centroids, graph)."""
    if choice.kind == "flat":
        return count * (4 * dim + ID_BYTES + IDMAP2_ENTRY_BYTES)
    centroids = choice.nlist * 4 * dim
    if choice.kind == "ivf":
        return count * (4 * dim + ID_BYTES) + centroids
    graph = choice.nlist * HNSW_LINKS * 2 * 4  # level 0 holds 2*M links of int32
    rotation = 4 * dim * dim
    return count * (choice.code_bytes + ID_BYTES) + centroids + graph + rotation


def choose(count: int, dim: int, budget: int, exact_limit: int) -> IndexChoice:
    """Exact below `exact_limit`; `IVF{k},Flat` while it fits `budget`; OPQ+IVF-HNSW+fast-scan PQ
    beyond, with the finest code that fits (the coarsest when none does: the budget is then
    exceeded, as little as possible)."""
    if count < exact_limit:
        return IndexChoice("IDMap2,Flat")
    nlist = list_count(count)
    nprobe = max(16, nlist // 64)
    flat = IndexChoice(f"IVF{nlist},Flat", nprobe=nprobe, nlist=nlist)
    if estimate_bytes(flat, count, dim) <= budget:
        return flat
    lengths = [n for n in SUBVECTOR_LENGTHS if dim % n == 0] or [_divisor(dim)]
    parts = [dim // length for length in lengths]
    options = [
        IndexChoice(
            f"OPQ{m},IVF{nlist}_HNSW{HNSW_LINKS},PQ{m}x{PQ_BITS}fs",
            nprobe=nprobe,
            nlist=nlist,
            pq_parts=m,
            ef_search=2 * nprobe,
            refine=DEFAULT_REFINE,
        )
        for m in parts
    ]
    fitting = [c for c in options if estimate_bytes(c, count, dim) <= budget]
    return fitting[0] if fitting else options[-1]


def _divisor(dim: int) -> int:
    """A sub-vector length for a dimension no SUBVECTOR_LENGTHS divides: 2 floats or 1."""
    return 2 if dim % 2 == 0 else 1


def available_memory() -> int:
    """Bytes the kernel says can be had now without swapping (physical RAM if it won't say)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return machine_memory()
