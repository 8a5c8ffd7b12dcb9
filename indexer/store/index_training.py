"""Training an inverted file within a CPU build's time: fewer k-means and OPQ rounds, and a
capped sample for the PQ codebooks and the rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faiss

# k-means rounds for the lists and OPQ rounds for the rotation (faiss: 25 and 50); beyond 10
# either barely moves.
TRAIN_ITERATIONS = 10
# Points the PQ codebooks and the OPQ rotation train on (faiss: 65,536): k-means on 4-float
# sub-vectors runs far below the machine's matmul speed, so this bounds the build on CPUs.
PQ_TRAIN_POINTS = 16_384


def fewer_iterations(index: faiss.Index) -> None:
    """Cap the k-means and OPQ rounds: on CPUs their defaults dominate the build."""
    import faiss

    faiss.extract_index_ivf(index).cp.niter = TRAIN_ITERATIONS
    if isinstance(index, faiss.IndexPreTransform):
        chain = index.chain  # a SWIG vector, which faiss' stubs call a list
        for n in range(chain.size()):  # type: ignore[attr-defined]
            transform = faiss.downcast_VectorTransform(chain.at(n))  # type: ignore[attr-defined]
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter = transform.niter_pq_0 = TRAIN_ITERATIONS
                transform.max_train_points = PQ_TRAIN_POINTS
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if isinstance(ivf, faiss.IndexIVFPQ | faiss.IndexIVFPQFastScan):  # its codebooks
        ivf.pq.cp.niter = TRAIN_ITERATIONS
        ivf.pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS // ivf.pq.ksub
