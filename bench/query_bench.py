"""Query benchmark for the README: cold CLI queries against rclip, warm latency and recall.

Run with the project's interpreter after `bench/index_bench.py` has set up its cache once
(photos, rclip peer, random ViT-B-32-256 checkpoint):

    .venv/bin/python bench/query_bench.py [--runs N] [--sizes 10000,100000,1000000] [--cache DIR]

Measured (printed, and written to bench/out/query_bench.json):
  1. cold `photoseek search "text" --json`: a new process each time, against a 10,000-image
     index (the 62 real photos indexed with ViT-B-32-256 random weights, plus synthetic rows up
     to 10,000), alternating with rclip's cold `rclip -n` query on the same photos; each run of
     either tool asks a text of its own (no cache can help either); median of runs;
  2. warm latency through the library API (index open, query vector given): p50/p95 over 300
     queries, and recall@10 against exact search, on synthetic clustered vectors at each size;
  3. warm text query end to end (ONNX text tower + search) on the 10k index.
Random weights: compare speed only, never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lib import OUT_DIR
from lib.cache import ARCH, DEFAULT_CACHE, Paths
from lib.peer import ensure_setup, peer_env, photoseek_bin, photoseek_index_cmd, rclip_cmd
from lib.tables import table, write_json
from lib.timing import alternating, run_child

OUT_FILE = OUT_DIR / "query_bench.json"
QUERY = "a dog on a beach"
# Each cold run's text, one per run and tool: the nth of these words after QUERY.
COLD_WORDS = ("at dawn", "in the rain", "with a ball", "and a child", "near rocks", "asleep",
              "running", "at sunset", "by the sea", "in winter", "wet", "jumping")  # fmt: skip
DIM = 512
COLD_TARGET_S = 0.8
COLD_TARGET_RATIO = 0.5  # photoseek's wall time over rclip's, side by side in one run


def build_cold_index(paths: Paths, size: int) -> Path:
    """The 62 photos indexed for real, padded with synthetic rows to `size` images; built again
    when the cached one has an older catalog schema than today's indexer writes (a search
    opens a catalog read-only and never migrates it, so an old one would be measured as is)."""
    from indexer.store.catalog import Catalog, NewImage
    from indexer.store.layout import SCHEMA_VERSION
    from indexer.store.vector_store import VectorStore, sync

    index = paths.cache / f"query-{size}" / "index"
    done, built = index / "bench.complete", f"schema {SCHEMA_VERSION}"
    if done.exists() and done.read_text() == built:
        return index
    shutil.rmtree(index, ignore_errors=True)
    run_child(photoseek_index_cmd(paths, index), env=peer_env(paths), what="photoseek index")
    catalog = Catalog.open(index)
    have = catalog.counts()["images"]
    vectors = clustered(size - have, DIM, seed=1)
    rows = [
        NewImage(f"/synthetic/{i // 1000:03d}/{i:07d}.jpg".encode(), 3_000_000, 1,
                 i.to_bytes(16, "big"), vector=v, width=4000, height=3000)
        for i, v in enumerate(vectors)
    ]  # fmt: skip
    for start in range(0, len(rows), 5000):
        catalog.write_batch(rows[start : start + 5000])
    store, _ = sync(VectorStore.load(index, DIM), catalog)
    store.save(index)
    catalog.checkpoint()
    catalog.close()
    done.write_text(built)
    return index


def clustered(n: int, d: int, seed: int, clusters: int = 2000) -> np.ndarray:
    """Unit vectors around 2,000 fixed random centres, like a photo collection's embeddings
    (many shots of the same scenes); `seed` draws which centre and the noise, so queries from
    another seed fall among the same clusters as the collection."""
    centres = np.random.default_rng(0).standard_normal((clusters, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        which = rng.integers(0, clusters, m)
        out[start : start + m] = centres[which] + 0.6 * rng.standard_normal((m, d), np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def cold_text(run: int) -> str:
    """The query text of cold run `run` (each tool asks each text once)."""
    return f"{QUERY} {COLD_WORDS[run % len(COLD_WORDS)]} {run // len(COLD_WORDS) or ''}".strip()


def cold_queries(paths: Paths, index: Path, runs: int) -> dict:
    def ours_cmd(text: str) -> list[str | os.PathLike[str]]:
        return [photoseek_bin(), "search", text, "--index", index, "-k", "10", "--json"]

    def theirs_cmd(text: str) -> list[str | os.PathLike[str]]:
        return [*rclip_cmd(paths, no_indexing=True)[:-1], text]  # its query is the last argument

    env = peer_env(paths)
    ours, theirs = [], []
    run_child(ours_cmd("a warm-up"), env=env, what="photoseek search")  # warms the page cache
    run_child(theirs_cmd("a warm-up"), cwd=paths.photos, env=env, what="rclip -n")
    for run, side in alternating(runs, "ours", "theirs"):
        if side == "ours":
            ours.append(run_child(ours_cmd(cold_text(run)), env=env, what="photoseek search"))
        else:
            done = run_child(theirs_cmd(cold_text(run)), cwd=paths.photos, env=env, what="rclip -n")
            theirs.append(done)
    med_ours = statistics.median(r.wall_s for r in ours)
    med_theirs = statistics.median(r.wall_s for r in theirs)
    return {
        "photoseek_wall_s": [round(r.wall_s, 3) for r in ours],
        "rclip_wall_s": [round(r.wall_s, 3) for r in theirs],
        "photoseek_median_s": round(med_ours, 3),
        "rclip_median_s": round(med_theirs, 3),
        "photoseek_index_images": 10_000,
        "rclip_index_images": len(list(paths.photos.iterdir())),
        "ratio_rclip_over_photoseek": round(med_theirs / med_ours, 2),
        "ratio_photoseek_over_rclip": round(med_ours / med_theirs, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "meets_target": med_ours <= COLD_TARGET_S,
        "meets_ratio_target": med_ours <= COLD_TARGET_RATIO * med_theirs,
    }


def warm_store(size: int, queries: int = 300) -> dict:
    """p50/p95 of store search + catalog-free id lookup, and recall@10 vs exact search."""
    import faiss

    from indexer.store.vector_store import VectorStore, choose_index

    data = clustered(size, DIM, seed=2)
    ids = np.arange(1, size + 1, dtype=np.int64)
    started = time.perf_counter()
    store = VectorStore.build(ids, data)
    build_s = time.perf_counter() - started
    query_vectors = clustered(queries, DIM, seed=3)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(data)
    _, truth = exact.search(query_vectors, 10)
    latencies, hits = [], 0
    for q, true_ids in zip(query_vectors, truth, strict=True):
        t = time.perf_counter()
        _, found = store.search(q[None, :], 10)
        latencies.append(_ms_since(t))
        hits += len(set(found[0].tolist()) & set((true_ids + 1).tolist()))
    return {
        "vectors": size,
        "index": choose_index(size).factory,
        "nprobe": choose_index(size).nprobe,
        "build_s": round(build_s, 1),
        "p50_ms": _percentile(latencies, 50, 3),
        "p95_ms": _percentile(latencies, 95, 3),
        "recall_at_10": round(hits / (10 * queries), 4),
    }


def warm_engine(index: Path, queries: int = 100) -> dict:
    """Library API on the 10k index: vector search with catalog rows, and a full text query."""
    from search.engine import Engine
    from search.query import parse_terms

    engine = Engine.open(index)
    vectors = clustered(queries, DIM, seed=4)
    engine.search_vector(vectors[0], 10)
    search_ms = []
    for v in vectors:
        t = time.perf_counter()
        engine.search_vector(v, 10)
        search_ms.append(_ms_since(t))
    terms = parse_terms([QUERY])
    engine.search(terms, 10)
    text_ms = []
    for i in range(queries // 4):
        t = time.perf_counter()
        engine.search(parse_terms([f"{QUERY} {i}"]), 10)
        text_ms.append(_ms_since(t))
    engine.close()
    return {
        "vector_search_with_rows_p50_ms": _percentile(search_ms, 50, 3),
        "vector_search_with_rows_p95_ms": _percentile(search_ms, 95, 3),
        "text_query_p50_ms": _percentile(text_ms, 50, 2),
        "text_query_p95_ms": _percentile(text_ms, 95, 2),
    }


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _percentile(values: Sequence[float], q: float, digits: int) -> float:
    return round(float(np.percentile(values, q)), digits)


def warm_rerank(paths: Paths, queries: int = 40) -> dict:
    """Latency of `search --rerank-k 32` through the library, on a shapes-world gallery with a
    briefly trained tiny model (quality is not measured here: bench/shapes_recipe.py does)."""
    from indexer.datasets.shapes_world import write_dataset
    from indexer.pipeline import IndexOptions, run_index
    from indexer.training.loop import train
    from indexer.training.pairs import read_pairs
    from search.engine import Engine
    from search.query import Term

    root = paths.cache / "rerank-latency"
    if not (root / "model" / "itm_head.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        files = write_dataset(root / "data", train_groups=64, test_groups=60, size=64, seed=0)
        rows = read_pairs(files.train_jsonl)
        train([(str(r.image), r.caption, r.negatives) for r in rows], root / "model", epochs=1)
    run_index(root / "index", IndexOptions(roots=(root / "data" / "test",),
                                           model=str(root / "model")))  # fmt: skip
    captions = [r.caption for r in read_pairs(root / "data" / "test.jsonl")][:queries]
    with Engine.open(root / "index") as engine:
        engine.search([Term(text=captions[0])], k=10, rerank_k=32)  # loads torch + model once
        plain, reranked = [], []
        for caption in captions:
            t = time.perf_counter()
            engine.search([Term(text=caption)], k=10)
            plain.append(_ms_since(t))
            t = time.perf_counter()
            engine.search([Term(text=caption)], k=10, rerank_k=32)
            reranked.append(_ms_since(t))
    cold_cmd = [photoseek_bin(), "search", captions[1], "--index", root / "index", "-k", "10",
                "--rerank", "--rerank-k", "32"]  # fmt: skip
    cold = [run_child(cold_cmd, env=peer_env(paths), what="search --rerank") for _ in range(6)]
    test_images = sorted((root / "data" / "test").iterdir())[:32]
    photos = sorted(paths.photos.iterdir())[:32]
    return {
        "gallery": 240,
        "itc_query_p50_ms": _percentile(plain, 50, 2),
        "rerank32_query_p50_ms": _percentile(reranked, 50, 2),
        "rerank32_query_p95_ms": _percentile(reranked, 95, 2),
        "cold_rerank_cli_median_s": round(statistics.median(r.wall_s for r in cold[1:]), 3),
        "recompute32_shapes_ms": recompute_tokens_ms(str(root / "model"), test_images),
        "recompute32_photos_ms": recompute_tokens_ms(f"{ARCH}:{paths.checkpoint}", photos),
    }


def recompute_tokens_ms(model: str, files: list[Path], runs: int = 5) -> float:
    """The alternative to stored tokens: median ms to read and decode `files` (2 threads) and
    run the image tower for their patch tokens, as a rerank without stored tokens would."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from indexer.media.decode import decode
    from indexer.models.itm_head import image_features_and_tokens
    from indexer.models.loading import ModelSpec, load_model
    from indexer.models.pixels import standardise

    loaded = load_model(ModelSpec.parse(model), "auto", "cpu", towers="image")

    def pixels(path: Path) -> np.ndarray:
        return decode(path.read_bytes(), path.suffix.lower()[1:], loaded.image_size).pixels

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            batch = torch.from_numpy(np.stack(list(pool.map(pixels, files))))
        with torch.inference_mode():
            x = standardise(batch.permute(0, 3, 1, 2), loaded.mean, loaded.std).to(loaded.dtype)
            image_features_and_tokens(loaded.model, x)
        times.append(_ms_since(started))
    return round(statistics.median(times), 1)


def markdown(result: dict, command: str) -> str:
    cold = result["cold"]
    cold_header = [
        "Cold CLI text query, new process, median",
        "photoseek (10,000 images)",
        f"rclip ({cold['rclip_index_images']} images)",
        "photoseek / rclip",
    ]
    cold_row = [
        "wall time",
        f"{cold['photoseek_median_s']:.3f} s",
        f"{cold['rclip_median_s']:.3f} s",
        f"{cold['ratio_photoseek_over_rclip']:.2f}x",
    ]
    warm_header = ["Warm search (library API), vectors", "index", "p50", "p95", "recall@10"]
    warm_rows = [
        [
            f"{row['vectors']:,}",
            f"{row['index']}" + (f" (nprobe {row['nprobe']})" if row["nprobe"] else ""),
            f"{row['p50_ms']:.2f} ms",
            f"{row['p95_ms']:.2f} ms",
            f"{row['recall_at_10']:.3f}",
        ]
        for row in result["warm"]
    ]
    engine, rerank = result["engine"], result["rerank"]
    lines = [
        f"`{command}` — {os.cpu_count()} CPUs; random ViT-B-32-256 weights on both sides.",
        "",
        *table(cold_header, "lrrr", [cold_row]),
        "",
        *table(warm_header, "rlrrr", warm_rows),
        "",
        f"Rerank, warm (`photoseek-shapes` model with its ITM head, 240-image gallery): a text "
        f"query reranking the ITC top-32 p50 {rerank['rerank32_query_p50_ms']:.1f} ms, p95 "
        f"{rerank['rerank32_query_p95_ms']:.1f} ms (ITC alone p50 "
        f"{rerank['itc_query_p50_ms']:.1f} ms); a cold `photoseek search --rerank` (new "
        f"process, median of 5) takes {rerank['cold_rerank_cli_median_s']:.3f} s. "
        "Without stored tokens a rerank would first "
        f"read, decode and re-embed its 32 candidates: {rerank['recompute32_shapes_ms']:.0f} ms "
        f"for these 64-px images, {rerank['recompute32_photos_ms']:.0f} ms for 32 of the real "
        "photos with ViT-B-32-256.",
        "",
        f"Warm, 10k index through `Engine`: vector search + catalog rows p95 "
        f"{engine['vector_search_with_rows_p95_ms']:.2f} ms; a text query including the ONNX "
        f"text tower p50 {engine['text_query_p50_ms']:.1f} ms, p95 "
        f"{engine['text_query_p95_ms']:.1f} ms.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--only-rerank", action="store_true", help="measure rerank latency only")
    parser.add_argument("--only-cold", action="store_true", help="measure the cold CLI query only")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    paths = Paths(args.cache)
    os.environ.update(HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(paths.xdg_cache))
    ensure_setup(paths)
    if args.only_rerank:
        print(json.dumps(warm_rerank(paths)))
        return
    index = build_cold_index(paths, 10_000)
    result = {"command": " ".join(sys.argv), "cold": cold_queries(paths, index, args.runs)}
    print(json.dumps(result["cold"]), flush=True)
    if args.only_cold:
        return
    result["engine"] = warm_engine(index)
    print(json.dumps(result["engine"]), flush=True)
    result["rerank"] = warm_rerank(paths)
    print(json.dumps(result["rerank"]), flush=True)
    result["warm"] = []
    for size in (int(s) for s in args.sizes.split(",")):
        result["warm"].append(warm_store(size))
        print(json.dumps(result["warm"][-1]), flush=True)
    result["markdown"] = markdown(result, "python bench/query_bench.py " + " ".join(sys.argv[1:]))
    write_json(OUT_FILE, result)
    print(result["markdown"])


if __name__ == "__main__":
    main()
