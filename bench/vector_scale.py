"""Vector index benchmark at scale: N x 512 vectors through photoseek's own builder and tuner.

    nice -n 10 .venv/bin/python bench/vector_scale.py --n 1000000 [--max-index-memory 2G]
        [--cache /work/bench-cache/vector-scale] [--queries 200] [--seed 0] [--threads 1]
        [--rebuild | --retune]

The collection: a mixture that is not trivially clustered. 70% of the vectors come from many
small anisotropic clusters (one per ~200 vectors, sizes drawn from a power law, each centre
uniform on the sphere, each with its own per-axis spread of total norm 0.35-1.0: as wide as the
gaps between centres, so clusters overlap), 30% are uniform on the sphere of a random
64-dimensional subspace plus a little isotropic noise (BACKGROUND_DIM, BACKGROUND_NOISE).
Every chunk of CHUNK vectors comes from (seed, chunk number) alone, so the stream regenerates;
it is written once, as float16, to a file that is memory-mapped and read by id (the collection
is defined as those float16 values, exact ground truth included). Never in memory whole.

Killed at any point, a run resumes: the data file is written under a `.part` name with a count
of the chunks already flushed beside it (generation goes on from there, and the file is renamed
into place once whole); the index is saved atomically and its build's figures (`build.json`)
written after it, so an index with figures is reused (`--rebuild` builds it again) and one
without them is built afresh; the exact answers to the fresh queries are cached the same way.
`--retune` tunes a reused index again with today's tuner (`vector_store.retune`, no rebuild) and
saves its settings, its record and the figures of that tuning (`build.json`'s "retuned").

The index is built by `indexer.store.vector_store.build_streaming`, the indexer's own path
(choice within the memory budget, training on a sample, adding in chunks, tuning nprobe /
efSearch / the refine shortlist on held-out queries to recall@10 >= 0.95); only the source of
vectors differs: the float16 file here, the catalog in photoseek. The search is the store's
own, with its PQ shortlist re-scored from that file (`exact=`), as a reader re-scores from the
catalog. A fresh process loads the saved file (memory-mapped when larger than half the RAM
available) and times warm single queries on `--threads` faiss threads (1: as `photoseek serve`
runs each search); recall@10 is against a chunked brute-force scan, with its standard error
over the queries (`recall_at_10_se`: 0.005-0.007 on 200 queries near 0.95, 0.002-0.003 on 1,000).

Memory, counted honestly: `index_resident_bytes` is what the index keeps in RAM (codes, ids,
centroids, graph, rotation); the re-scoring reads refine*k vectors per query from the float16
file (`refine_file_bytes` on disk), pages the OS caches as memory allows, reported separately
as the serving process's file-backed RSS after the queries.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DIM = 512
CHUNK = 100_000
PER_CLUSTER = 200
BACKGROUND = 0.3
# The background is uniform on the sphere of a random 64-dimensional subspace, plus isotropic
# noise of this per-axis spread: real embeddings have a low intrinsic dimension, and uniform noise
# in all 512 has no neighbours worth finding (each query's top 10 would be a random draw).
BACKGROUND_DIM = 64
BACKGROUND_NOISE = 0.01
DEFAULT_CACHE = Path("/work/bench-cache/vector-scale")
K = 10
LATENCY_RUNS = 300


def mixture_params(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster centres, per-axis spreads and (power-law) weights, from the seed alone."""
    rng = np.random.default_rng([seed, 0])
    clusters = max(1, n // PER_CLUSTER)
    centres = _unit(rng.standard_normal((clusters, DIM), dtype=np.float32))
    shape = rng.lognormal(0.0, 1.0, (clusters, DIM)).astype(np.float32)
    radius = rng.uniform(0.35, 1.0, (clusters, 1)).astype(np.float32)
    spreads = (radius * shape / np.linalg.norm(shape, axis=1, keepdims=True)).astype(np.float16)
    weights = 1.0 / (np.arange(clusters) + 10.0) ** 0.8
    basis = np.linalg.qr(rng.standard_normal((DIM, BACKGROUND_DIM)))[0].astype(np.float32)
    return centres.astype(np.float16), spreads, weights / weights.sum(), basis


def chunk_vectors(params: tuple, seed: int, number: int, size: int) -> np.ndarray:
    """Chunk `number` of the stream: unit vectors [size, DIM] float32."""
    centres, spreads, weights, basis = params
    rng = np.random.default_rng([seed, 1, number])
    which = rng.choice(len(weights), size=size, p=weights)
    noise = rng.standard_normal((size, DIM), dtype=np.float32)
    x = centres[which].astype(np.float32) + spreads[which].astype(np.float32) * noise
    background = rng.random(size) < BACKGROUND
    count = int(background.sum())
    flat = _unit(rng.standard_normal((count, BACKGROUND_DIM), dtype=np.float32)) @ basis.T
    x[background] = flat + BACKGROUND_NOISE * rng.standard_normal((count, DIM), dtype=np.float32)
    return _unit(x)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ensure_data(cache: Path, n: int, seed: int) -> Path:
    """The float16 file of the stream, written chunk by chunk once (resumed where it stopped)."""
    path = cache / f"vectors-v2-{n}-{seed}.f16"
    if path.exists():  # renamed into place once complete
        return path
    cache.mkdir(parents=True, exist_ok=True)
    params = mixture_params(n, seed)
    temp, done = path.with_suffix(".part"), path.with_suffix(".part.chunks")
    start_at = int(done.read_text()) if temp.exists() and done.exists() else 0
    mode = "r+" if start_at else "w+"
    out = np.lib.format.open_memmap(temp, mode=mode, dtype=np.float16, shape=(n, DIM))
    for number, start in enumerate(range(0, n, CHUNK)):
        if number < start_at:
            continue
        out[start : start + CHUNK] = chunk_vectors(params, seed, number, min(CHUNK, n - start))
        out.flush()  # on disk before the count says so: a kill never skips a chunk
        done.write_text(str(number + 1))
    del out
    temp.rename(path)
    done.unlink()
    return path


def open_data(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def reader(data: np.ndarray):  # noqa: ANN201 - an Exact: sorted ids (1-based rows) -> float32
    def read(ids: np.ndarray) -> np.ndarray:
        return np.asarray(data[ids - 1], dtype=np.float32)

    return read


def queries_for(n: int, seed: int, count: int) -> np.ndarray:
    """Fresh vectors of the same mixture, outside the collection."""
    return chunk_vectors(mixture_params(n, seed), seed + 1, 10**6, count)


def ground_truth(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-K ids (1-based) by a brute-force scan, CHUNK rows at a time."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.empty((len(queries), 0), np.int64)
    for start in range(0, len(data), CHUNK):
        scores = queries @ np.asarray(data[start : start + CHUNK], np.float32).T
        ids = np.arange(start + 1, start + 1 + scores.shape[1])
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-all_s, K, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


def rss() -> dict[str, float]:
    """This process's resident memory now, anonymous and file-backed, in MB, and its peak."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    fields["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return fields


def build(data_path: Path, index_dir: Path, budget: int | None) -> dict:
    """Build, tune and save through photoseek's builder (run in a child: its own peak RSS)."""
    from indexer.store.index_choice import estimate_bytes
    from indexer.store.vector_store import build_streaming, choose_index

    # The builder's own progress (training, tuning), timestamped: where a long build's time goes.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = open_data(data_path)
    n = len(data)
    ids = np.arange(1, n + 1, dtype=np.int64)
    started = time.perf_counter()
    store = build_streaming(ids, DIM, reader(data), budget)
    seconds = time.perf_counter() - started
    index_dir.mkdir(parents=True, exist_ok=True)
    store.save(index_dir)
    choice = choose_index(n, DIM, budget)
    record = json.loads((index_dir / "vectors.json").read_text())
    built = {
        "build_s": round(seconds, 1),
        "record": record,
        "index_resident_bytes": estimate_bytes(choice, n, DIM),
        "build_memory": rss(),
        "build_loadavg_at_end": os.getloadavg(),
    }
    _write_atomically(index_dir / "build.json", json.dumps(built) + "\n")
    return built


def retune_saved(data_path: Path, index_dir: Path) -> dict:
    """Tune the saved index again with today's tuner and save it (run in a child, as `build`)."""
    from indexer.store.vector_store import VectorStore, retune

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = open_data(data_path)
    store = VectorStore.load(index_dir, DIM, mmap=False)  # saved again: not a mapped copy
    started = time.perf_counter()
    retune(store, np.arange(1, len(data) + 1, dtype=np.int64), reader(data), CHUNK)
    seconds = time.perf_counter() - started
    store.save(index_dir)
    built = json.loads((index_dir / "build.json").read_text())
    built["record"] = json.loads((index_dir / "vectors.json").read_text())
    built["retuned"] = {"retune_s": round(seconds, 1), "loadavg_at_end": list(os.getloadavg())}
    _write_atomically(index_dir / "build.json", json.dumps(built) + "\n")
    return built


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(path)


def cached_truth(data_path: Path, queries: np.ndarray, seed: int) -> np.ndarray:
    """The exact top-K of the fresh queries, scanned once and kept beside the data."""
    path = data_path.with_name(f"{data_path.stem}-truth-{seed}-{len(queries)}.npy")
    if path.exists():
        return np.load(path)
    truth = ground_truth(open_data(data_path), queries)
    temp = path.with_suffix(".tmp.npy")
    np.save(temp, truth)
    temp.replace(path)
    return truth


def serve(data_path: Path, index_dir: Path, seed: int, count: int, threads: int) -> dict:
    """Load the saved index in a fresh process; warm single-query latency and recall@10."""
    import faiss

    from indexer.store.index_tuning import recall_and_error
    from indexer.store.vector_store import VectorStore

    faiss.omp_set_num_threads(threads)
    data = open_data(data_path)
    before = rss()
    store = VectorStore.load(index_dir, DIM)
    loaded = rss()
    queries = queries_for(len(data), seed, count)
    truth = cached_truth(data_path, queries, seed)
    exact = reader(data)
    _, found = store.search(queries, K, exact=exact)
    recall, error = recall_and_error(found, truth)
    for row in queries[:20]:  # warm-up
        store.search(row[None], K, exact=exact)
    times = []
    for i in range(LATENCY_RUNS):
        row = queries[i % len(queries)][None]
        started = time.perf_counter()
        store.search(row, K, exact=exact)
        times.append((time.perf_counter() - started) * 1e3)
    return {
        "mapped": store.mapped,
        "faiss_threads": threads,
        "recall_at_10": round(recall, 4),
        "recall_at_10_se": round(error, 4),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
        "index_anon_rss_mb": round(loaded["RssAnon"] - before["RssAnon"], 1),
        "serve_memory": rss(),
        "serve_loadavg_at_end": os.getloadavg(),
    }


def in_child(function, *args):  # noqa: ANN001, ANN002, ANN201
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--max-index-memory", default=None, help="e.g. 2G [default: photoseek's]")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="faiss threads while serving")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--rebuild", action="store_true", help="build even if a built index is there"
    )
    again.add_argument(
        "--retune", action="store_true", help="tune a built index again (no rebuild) and save it"
    )
    args = parser.parse_args(argv)
    from indexer.store.index_choice import parse_size

    budget = parse_size(args.max_index_memory) if args.max_index_memory else None
    loadavg_at_start = os.getloadavg()
    started = time.perf_counter()
    data_path = ensure_data(args.cache, args.n, args.seed)
    print(f"data: {data_path} ({time.perf_counter() - started:.0f}s)", flush=True)
    # v3: fast-scan PQ codes, at most 8,192 lists (v2 indexes were 8-bit PQ)
    label = f"v3-{args.n}-{args.seed}-{args.max_index_memory or 'default'}"
    index_dir = args.cache / f"index-{label}"
    done = index_dir / "build.json"
    if done.exists() and (index_dir / "vectors.faiss").exists() and not args.rebuild:
        reused = in_child(retune_saved, data_path, index_dir) if args.retune else None
        built = {**(reused or json.loads(done.read_text())), "reused_index": True}
    else:
        built = in_child(build, data_path, index_dir, budget)
    print(json.dumps(built), flush=True)
    served = in_child(serve, data_path, index_dir, args.seed, args.queries, args.threads)
    result = {
        "command": " ".join(["bench/vector_scale.py", *argv]),
        "n": args.n,
        "dim": DIM,
        "max_index_memory": args.max_index_memory,
        "mixture": f"{1 - BACKGROUND:.0%} in ~{PER_CLUSTER}-vector anisotropic clusters, "
        f"{BACKGROUND:.0%} uniform on the sphere of a random {BACKGROUND_DIM}-d subspace "
        f"+ noise {BACKGROUND_NOISE}/axis",
        "index_file_bytes": (index_dir / "vectors.faiss").stat().st_size,
        "refine_file_bytes": data_path.stat().st_size,
        **built,
        **served,
        "cpus": os.cpu_count(),
        "niceness": os.nice(0),
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": os.getloadavg(),
    }
    out = REPO / "bench" / "out" / f"vector_scale-{label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
