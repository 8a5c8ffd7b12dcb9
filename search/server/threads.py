"""FAISS on one OpenMP thread in each of the server's threads.

The server runs many searches at once, each on a thread of its own (the request threads, or the
one leading a coalesced batch), and a team of OpenMP threads per search only spins on the cores
the other searches and the text tower need: a 10k exact search costs several times its work.
OpenMP's thread count is a per-thread setting: `omp_set_num_threads` in the main thread leaves
every request thread at the default of one OpenMP thread per core, so each thread that
searches sets it for itself, once. This is the server's own process: nothing else's changes.
"""

from __future__ import annotations

import threading

import numpy as np

from search.engine import Knn

_local = threading.local()


def one_openmp_thread() -> None:
    """Make this thread's FAISS calls run on this thread alone (once per thread)."""
    if not getattr(_local, "single", False):
        import faiss

        faiss.omp_set_num_threads(1)
        _local.single = True


class OneThreadKnn:
    """`knn`, each call on the calling thread alone (`one_openmp_thread`)."""

    def __init__(self, knn: Knn) -> None:
        self._knn = knn

    def __call__(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        one_openmp_thread()
        return self._knn(queries, k, allowed)
