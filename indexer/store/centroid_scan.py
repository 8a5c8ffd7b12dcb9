"""Finding the lists an inverted-file search probes by an exact scan of the centroids, for the
depths where that is cheaper than walking the centroid graph.

An `IVF{k}_HNSW32` index finds a query's lists through an HNSW graph: cheap while it visits a
small part of the centroids, which is what a build needs (each added vector is assigned at a
shallow depth). A query that must probe many lists (recall 0.95 on a hard collection took 512 of
4,096) searches the graph as deep, and then visits nearly every centroid, one distance at a
time, where one matrix product over the graph's own stored centroids does the same work faster.
Measured on bench/vector_scale.py's 1M index (4,096 centroids of 512 floats, one thread):
efSearch 64 computed 1,800 distances a query in 0.33 ms, 256: 3,600 in 0.82 ms, 1,024: 4,100
in 1.08 ms; the scan of all 4,096 took 0.30 ms. A whole search at nprobe 512 took 6.0 ms (p50)
through the graph and 1.7 ms with the scan, the same lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import faiss

# Distances the graph computes per unit of search depth while it is shallow (28 at efSearch 64,
# above): once that many would reach nlist, the scan of every centroid is the cheaper search. At
# 4,096 centroids the switch comes at efSearch 205, past the depth (64) where the two cost alike.
GRAPH_DISTANCES_PER_EF = 20


def scan_is_cheaper(ef_search: int, nlist: int) -> bool:
    """Whether a search `ef_search` deep into a graph of `nlist` centroids costs more than an
    exact scan of them."""
    return GRAPH_DISTANCES_PER_EF * ef_search >= nlist


def search(
    index: faiss.Index,
    graph: faiss.IndexHNSW,
    queries: np.ndarray,
    k: int,
    params: faiss.SearchParametersIVF,
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search(queries, k, params=params)`, its lists found by scanning the centroids the
    graph stores (`params.nprobe` of them per query) instead of walking it."""
    import faiss

    x = queries
    if isinstance(index, faiss.IndexPreTransform):  # OPQ: the lists live in the rotated space
        chain = index.chain  # a SWIG vector, which faiss' stubs call a list
        for n in range(chain.size()):  # type: ignore[attr-defined]
            x = faiss.downcast_VectorTransform(chain.at(n)).apply(x)  # type: ignore[attr-defined]
    x = np.ascontiguousarray(x, np.float32)
    centroid_scores, lists = graph.storage.search(x, params.nprobe)
    # The C++ call: faiss' numpy wrapper of it refuses search parameters (the filter, nprobe).
    scores = np.empty((len(x), k), np.float32)
    ids = np.empty((len(x), k), np.int64)
    ivf: Any = faiss.extract_index_ivf(index)  # (faiss' stubs lack the C++ call)
    ptr = faiss.swig_ptr
    ivf.search_preassigned_c(
        len(x), ptr(x), k, ptr(lists), ptr(centroid_scores), ptr(scores), ptr(ids), False, params
    )
    return scores, ids
