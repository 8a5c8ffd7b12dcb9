"""Which FAISS index suits a collection: its size, its dimension and a memory budget.

In the spirit of autofaiss: exact search while it is cheap, an inverted file of full vectors
while those fit the budget, and beyond it an inverted file of product-quantised codes (rotated by
OPQ, its centroids found through an HNSW graph) whose shortlist is re-scored with the exact
vectors (the catalog's, read by id), which PQ codes alone cannot rank to recall 0.95.
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
# the fewer lists, the cheaper the k-means), never under 256.
MIN_LISTS = 256
# Training points per list: faiss warns below 39; more buys little for the k-means.
TRAIN_PER_LIST = 40
# PQ code sizes tried, best first: bytes per vector, each dividing the dimension into
# sub-vectors of at least MIN_SUBVECTOR floats (shorter ones cost far more to train than they
# buy in recall, which the exact re-scoring restores anyway).
PQ_SIZES = (128, 96, 64, 48, 32, 16, 8, 4)
MIN_SUBVECTOR = 4
HNSW_LINKS = 32  # the centroid graph's links per node (autofaiss' IVF{k}_HNSW32)
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
    pq_bytes: int = 0  # bytes per PQ code (0: full vectors)
    ef_search: int = 0  # HNSW search depth over the centroids (0: a flat quantizer)
    refine: int = 0  # shortlist of refine*k re-scored exactly (0: scores are already exact)

    @property
    def kind(self) -> str:
        """flat, ivf or pq: a store of another kind than wanted is rebuilt."""
        return "pq" if self.pq_bytes else "ivf" if self.nlist else "flat"


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
    return max(MIN_LISTS, 1 << math.ceil(math.log2(4 * math.sqrt(max(count, 1)))))


def training_size(choice: IndexChoice, count: int) -> int:
    """How many vectors to train on: enough per list, never more than the collection."""
    return min(count, TRAIN_PER_LIST * max(choice.nlist, 1))


def estimate_bytes(choice: IndexChoice, count: int, dim: int) -> int:
    """Resident bytes of the index for `count` vectors (codes, ids, centroids, graph)."""
    if choice.kind == "flat":
        return count * (4 * dim + ID_BYTES + IDMAP2_ENTRY_BYTES)
    centroids = choice.nlist * 4 * dim
    if choice.kind == "ivf":
        return count * (4 * dim + ID_BYTES) + centroids
    graph = choice.nlist * HNSW_LINKS * 2 * 4  # level 0 holds 2*M links of int32
    rotation = 4 * dim * dim
    return count * (choice.pq_bytes + ID_BYTES) + centroids + graph + rotation


def choose(count: int, dim: int, budget: int, exact_limit: int) -> IndexChoice:
    """Exact below `exact_limit`; `IVF{k},Flat` while it fits `budget`; OPQ+IVF-HNSW+PQ beyond,
    with the largest code that fits (the smallest when none does: the budget is then exceeded,
    as little as possible)."""
    if count < exact_limit:
        return IndexChoice("IDMap2,Flat")
    nlist = list_count(count)
    nprobe = max(16, nlist // 64)
    flat = IndexChoice(f"IVF{nlist},Flat", nprobe=nprobe, nlist=nlist)
    if estimate_bytes(flat, count, dim) <= budget:
        return flat
    sizes = [m for m in PQ_SIZES if dim % m == 0 and dim // m >= MIN_SUBVECTOR] or [1]
    options = [
        IndexChoice(
            f"OPQ{m},IVF{nlist}_HNSW{HNSW_LINKS},PQ{m}",
            nprobe=nprobe,
            nlist=nlist,
            pq_bytes=m,
            ef_search=2 * nprobe,
            refine=4,
        )
        for m in sizes
    ]
    fitting = [c for c in options if estimate_bytes(c, count, dim) <= budget]
    return fitting[0] if fitting else options[-1]


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
