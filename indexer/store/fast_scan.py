"""Which of faiss' fast-scan implementations scans the lists of a search over 4-bit PQ codes:
one query list by list, a batch of queries grouped by the lists they probe.

faiss' own choice (`implem` 0: 12, or 13 with a reservoir when k > 20) groups a batch's queries
by list, which pays for a batch, and does the same grouping for a single query, which does not.
Measured on bench/vector_scale.py's 10M index (`OPQ128,IVF8192_HNSW32,PQ128x4fs`, one faiss
thread, a shortlist of 320 from 1,024 lists): scanning for one query took 8.3 ms (p50) with
faiss' choice, 5.1 ms list by list (10; 11, its reservoir, 5.2; 14 and 15 8.2-8.7), the same
neighbours; a batch of 200 queries took 0.7 s grouped and 2.3 s list by list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faiss

SINGLE_QUERY = 10  # list by list, a heap of the k best
BATCH = 0  # faiss' own choice


def implementation(queries: int) -> int:
    """The fast-scan implementation for a search of `queries` rows."""
    return SINGLE_QUERY if queries == 1 else BATCH


def choose(index: faiss.Index, queries: int) -> None:
    """Set the implementation of `index`'s fast-scan lists (if it has them) for a search of
    `queries` rows. The setting lives on the index: a search running at the same time in another
    thread may then use the other implementation, which finds the same neighbours (up to ties
    between equal codes) at another speed."""
    import faiss

    found = faiss.try_extract_index_ivf(index)
    ivf = faiss.downcast_index(found) if found is not None else None
    if isinstance(ivf, faiss.IndexIVFFastScan):
        ivf.implem = implementation(queries)
