"""Load benchmark for `photoseek serve`: concurrent text queries over HTTP on loopback.

Against the query benchmark's 10,000-image index (built once by `bench/query_bench.py`'s
setup; `--index DIR` uses another), one server process, N clients each on its own keep-alive
connection sending `GET /api/search?q=…&k=10` back to back for S seconds:

    .venv/bin/python bench/serve_bench.py [--clients 50,10] [--seconds 30] [--index DIR]
        [--serve=OPTION ...] [--out FILE]

Reports errors, p50/p95/p99 latency and queries/s per client count (printed, and written to
bench/out/serve_bench.json, or `--out`). Target: 0 errors; p95 ≤ 50 ms at 10 clients on a
2-core CPU. As the clients share the server's cores, each run also reports the CPU the server
and the clients spent per query, and how many cores other processes kept busy meanwhile: on a
shared machine those CPU figures hold where the latencies do not.

`--reindex` measures searching during a re-index instead: a scratch index of the benchmark's
photos, then a real `photoseek index` of the folder grown by `--grow` mirrored copies while the
clients query; reports errors, latency while it ran, and how soon after it the server answered
with the new photos (bench/out/serve_reindex.json). Target: 0 errors.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lib import OUT_DIR
from lib.cache import ARCH, DEFAULT_CACHE, IMAGE_EXTS, Paths
from lib.peer import photoseek_bin
from lib.tables import say, table, write_json
from lib.timing import machine_busy_s, own_cpu_s, run_child
from PIL import Image

OUT_FILE = OUT_DIR / "serve_bench.json"
REINDEX_FILE = OUT_DIR / "serve_reindex.json"
Going = Callable[[], bool]  # whether a client sends another query
P95_TARGET_MS = 50.0
# The query pool: every (look, subject, place) once, shuffled; the clients share one walk
# through it, so no text is sent twice in a run (below 12,000 queries) and no cache of text
# embeddings could make the figures look better than a real query mix.
LOOKS = [
    "a red", "a blue", "a small", "an old", "a wet", "a bright", "a dark", "a tiny", "a big",
    "a yellow", "a broken", "a shiny", "a green", "a white", "a black", "a wooden", "a striped",
    "a blurry", "a sleepy", "a happy",
]  # fmt: skip
SUBJECTS = [
    "dog", "cat", "car", "bicycle", "boat", "house", "tree", "bird", "horse", "child", "kite",
    "tent", "umbrella", "train", "bridge", "lamp", "chair", "cake", "guitar", "balloon", "tractor",
    "flower", "clock", "bus", "sheep", "camera", "window", "door", "book", "hat",
]  # fmt: skip
PLACES = [
    "on a beach", "in the snow", "at night", "in a garden", "on a street", "in the rain",
    "at sunset", "in a forest", "by a lake", "in a kitchen", "on a mountain", "in a city",
    "at a party", "in a field", "under a bridge", "at the harbour", "in the fog", "at dawn",
    "in a market", "on a roof",
]  # fmt: skip


def query_pool(seed: int = 0) -> list[str]:
    """Every look x subject x place text (12,000), in a seeded random order."""
    texts = [f"{look} {subject} {place}" for look in LOOKS for subject in SUBJECTS
             for place in PLACES]  # fmt: skip
    random.Random(seed).shuffle(texts)
    return texts


def start_server(
    index: Path, env: dict[str, str], options: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str, int]:
    """`photoseek serve --port 0 [options]` on `index`: (process, host, port) once it is ready."""
    process = subprocess.Popen(
        [photoseek_bin(), "serve", "--index", str(index), "--port", "0", *options],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving http://"):
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    host, port = urllib.parse.urlsplit(line.split()[1]).netloc.rsplit(":", 1)
    return process, host, int(port)


def client(
    host: str, port: int, going: Going, queries: Iterator[str], out: list[float], errors: list[str],
    connects: list[int],
) -> None:  # fmt: skip
    """One client: queries back to back on one keep-alive connection while `going()`;
    latencies in ms, and every connection it had to open counted in `connects`."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    while going():
        path = "/api/search?" + urllib.parse.urlencode({"q": next(queries), "k": 10})
        started = time.perf_counter()
        try:
            if conn.sock is None:  # the first request, or the server closed the last one
                conn.connect()
                connects.append(1)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
                continue
        except (OSError, http.client.HTTPException) as e:
            errors.append(type(e).__name__)
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            continue
        out.append((time.perf_counter() - started) * 1000)
    conn.close()


def process_cpu_s(pid: int) -> float:
    """CPU seconds process `pid` has used (from /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    host: str, port: int, clients: int, seconds: float, queries: Iterator[str],
    going: Going | None = None, server_pid: int | None = None,
) -> dict:  # fmt: skip
    """`clients` concurrent clients for `seconds` (or while `going()`), taking turns at
    `queries`: errors, latency percentiles, queries/s, and the CPU the clients (this process)
    and the server (`server_pid`) spent per query."""
    until = time.perf_counter() + seconds
    going = going or (lambda: time.perf_counter() < until)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    connects: list[int] = []
    threads = [
        threading.Thread(target=client, args=(host, port, going, queries, one, errors, connects))
        for one in latencies
    ]
    server_cpu = process_cpu_s(server_pid) if server_pid else 0.0
    client_cpu, busy = own_cpu_s(), machine_busy_s()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client_cpu, busy = own_cpu_s() - client_cpu, machine_busy_s() - busy
    server_cpu = process_cpu_s(server_pid) - server_cpu if server_pid else 0.0
    every = sorted(ms for one in latencies for ms in one)
    cuts = statistics.quantiles(every, n=100) if len(every) > 1 else [float("nan")] * 99
    per_query = 1000 / max(len(every), 1)
    return {
        "clients": clients, "seconds": round(elapsed, 1), "queries": len(every),
        "errors": len(errors), "error_kinds": sorted(set(errors)), "connections": len(connects),
        "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "p99_ms": round(cuts[98], 1),
        "qps": round(len(every) / elapsed, 1),
        "server_cpu_ms_per_query": round(server_cpu * per_query, 2) if server_pid else None,
        "client_cpu_ms_per_query": round(client_cpu * per_query, 2),
        "other_cores_busy": round(max(0.0, busy - client_cpu - server_cpu) / elapsed, 2),
    }  # fmt: skip


def markdown(runs: list[dict], command: str) -> str:
    rows = [[str(r["clients"]), str(r["queries"]), str(r["errors"]), f"{r['p50_ms']:.1f}",
             f"{r['p95_ms']:.1f}", f"{r['qps']:.0f}", f"{r['server_cpu_ms_per_query']:.1f}",
             f"{r['client_cpu_ms_per_query']:.2f}", f"{r['other_cores_busy']:.1f}"]
            for r in runs]  # fmt: skip
    head = ["clients", "queries", "errors", "p50 ms", "p95 ms", "queries/s",
            "server CPU ms/query", "client CPU ms/query", "other cores busy"]  # fmt: skip
    return "\n".join([f"`{command}`", "", *table(head, "rrrrrrrrr", rows)])


def default_index(cache: Path) -> Path:
    """The query benchmark's 10,000-image index, built by its setup if not yet there."""
    from lib.peer import ensure_setup
    from query_bench import build_cold_index

    paths = Paths(cache)
    os.environ.update(HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(paths.xdg_cache))
    ensure_setup(paths)
    return build_cold_index(paths, 10_000)


MIRRORS = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
           Image.Transpose.ROTATE_180)  # fmt: skip


def grow(photos: Path, folder: Path, count: int) -> None:
    """`folder` holding the benchmark's photos, then `count` new ones: mirrored copies."""
    shutil.copytree(photos, folder)
    sources = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    for n in range(count):
        source, turn = sources[n % len(sources)], MIRRORS[n // len(sources) % len(MIRRORS)]
        with Image.open(source) as photo:
            photo.convert("RGB").transpose(turn).save(folder / f"grown-{n:04d}.jpg", quality=90)


def index_cmd(paths: Paths, folder: Path, index: Path) -> list[str | os.PathLike[str]]:
    return [photoseek_bin(), "index", folder, "--index", index, "--model",
            f"{ARCH}:{paths.checkpoint}"]  # fmt: skip


def first_new_photo(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": "a", "glob": "grown-*"}))
        response = conn.getresponse()
        return response.status == 200 and bool(json.loads(response.read())["results"])
    finally:
        conn.close()


def reindex(cache: Path, clients: int, count: int) -> dict:
    """Clients query while `photoseek index` takes in `count` new photos; see the docstring."""
    from lib.peer import ensure_setup, peer_env

    paths = Paths(cache)
    ensure_setup(paths)
    base = paths.scratch / "serve-reindex"
    shutil.rmtree(base, ignore_errors=True)
    folder, index, env = base / "photos", base / "index", peer_env(paths)
    shutil.copytree(paths.photos, base / "first")
    run_child(index_cmd(paths, base / "first", index), env=env, what="photoseek index")
    shutil.rmtree(base / "first")
    grow(paths.photos, folder, count)
    process, host, port = start_server(index, env)
    try:
        queries = itertools.cycle(query_pool())
        load(host, port, 2, 2.0, queries)  # warm
        indexer = subprocess.Popen(
            index_cmd(paths, folder, index), env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        run = load(host, port, clients, 0, queries, going=lambda: indexer.poll() is None)
        stderr = indexer.communicate()[1]
        ended = time.perf_counter()
        while not first_new_photo(host, port) and time.perf_counter() - ended < 60:
            time.sleep(0.05)
        seen = time.perf_counter() - ended
    finally:
        process.terminate()
        process.wait(timeout=15)
    if indexer.returncode != 0:
        raise SystemExit(f"photoseek index failed: {stderr.strip()[-500:]}")
    return {**run, "grown": count, "new_photos_served_after_s": round(seen, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="50,10", help="client counts, one run each")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--index", type=Path, help="[default: the query benchmark's 10k index]")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--reindex", action="store_true", help="query during a re-index")
    parser.add_argument("--grow", type=int, default=62, help="photos the re-index adds")
    parser.add_argument("--out", type=Path, help=f"[default: {OUT_FILE}]")
    parser.add_argument(
        "--serve", action="append", default=[], metavar="OPTION",
        help="an option for `photoseek serve` (repeatable), e.g. --serve=--gpu",
    )  # fmt: skip
    args = parser.parse_args()
    command = "python bench/serve_bench.py " + " ".join(sys.argv[1:])
    if args.reindex:
        clients = int(args.clients.split(",")[-1])
        found = {"command": command, **reindex(args.cache, clients, args.grow)}
        write_json(REINDEX_FILE, found)
        print(found)
        return
    index = args.index or default_index(args.cache)
    process, host, port = start_server(index, dict(os.environ), args.serve)
    try:
        queries = itertools.cycle(query_pool())  # one walk for all: next() is atomic (GIL)
        load(host, port, 2, min(2.0, args.seconds), queries)  # warm: towers loaded, pages cached
        runs = []
        for clients in (int(c) for c in args.clients.split(",")):
            runs.append(load(host, port, clients, args.seconds, queries, server_pid=process.pid))
            say(str(runs[-1]))
    finally:
        process.terminate()
        process.wait(timeout=15)
    result = {"command": command, "index": str(index), "runs": runs,
              "markdown": markdown(runs, command), "p95_target_ms": P95_TARGET_MS}  # fmt: skip
    write_json(args.out or OUT_FILE, result)
    print(result["markdown"])


if __name__ == "__main__":
    main()
