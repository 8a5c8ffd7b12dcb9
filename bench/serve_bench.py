"""Load benchmark for `photoseek serve`: concurrent text queries over HTTP on loopback.

Against the query benchmark's 10,000-image index (built once by `bench/query_bench.py`'s
setup; `--index DIR` uses another), one server process, N clients each on its own keep-alive
connection sending `GET /api/search?q=…&k=10` back to back for S seconds:

    .venv/bin/python bench/serve_bench.py [--clients 50,10] [--seconds 30] [--index DIR]

Reports errors, p50/p95/p99 latency and queries/s per client count (printed, and written to
bench/out/serve_bench.json). Target: 0 errors; p95 ≤ 50 ms at 10 clients on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from lib import OUT_DIR
from lib.cache import DEFAULT_CACHE, Paths
from lib.peer import photoseek_bin
from lib.tables import say, table, write_json

OUT_FILE = OUT_DIR / "serve_bench.json"
QUERIES = [
    "a dog on a beach", "sunset over the sea", "a red car", "people at a party",
    "snowy mountains", "a cat sleeping", "city street at night", "a bowl of fruit",
]  # fmt: skip
P95_TARGET_MS = 50.0


def start_server(index: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, int]:
    """`photoseek serve --port 0` on `index`: (process, host, port) once it is ready."""
    process = subprocess.Popen(
        [photoseek_bin(), "serve", "--index", str(index), "--port", "0"],
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
    host: str, port: int, until: float, seed: int, out: list[float], errors: list[str]
) -> None:
    """One client: queries back to back on one connection until `until`; latencies in ms."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    n = seed
    while time.perf_counter() < until:
        path = "/api/search?" + urllib.parse.urlencode({"q": QUERIES[n % len(QUERIES)], "k": 10})
        n += 1
        started = time.perf_counter()
        try:
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


def load(host: str, port: int, clients: int, seconds: float) -> dict:
    """`clients` concurrent clients for `seconds`: errors, latency percentiles, queries/s."""
    until = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(host, port, until, i, latencies[i], errors))
               for i in range(clients)]  # fmt: skip
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = sorted(ms for one in latencies for ms in one)
    cuts = statistics.quantiles(every, n=100) if len(every) > 1 else [float("nan")] * 99
    return {
        "clients": clients, "seconds": round(elapsed, 1), "queries": len(every),
        "errors": len(errors), "error_kinds": sorted(set(errors)),
        "p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1), "p99_ms": round(cuts[98], 1),
        "qps": round(len(every) / elapsed, 1),
    }  # fmt: skip


def markdown(runs: list[dict], command: str) -> str:
    rows = [[str(r["clients"]), str(r["queries"]), str(r["errors"]), f"{r['p50_ms']:.1f}",
             f"{r['p95_ms']:.1f}", f"{r['qps']:.0f}"] for r in runs]  # fmt: skip
    head = ["clients", "queries", "errors", "p50 ms", "p95 ms", "queries/s"]
    return "\n".join([f"`{command}`", "", *table(head, "rrrrrr", rows)])


def default_index(cache: Path) -> Path:
    """The query benchmark's 10,000-image index, built by its setup if not yet there."""
    from lib.peer import ensure_setup
    from query_bench import build_cold_index

    paths = Paths(cache)
    os.environ.update(HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(paths.xdg_cache))
    ensure_setup(paths)
    return build_cold_index(paths, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="50,10", help="client counts, one run each")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--index", type=Path, help="[default: the query benchmark's 10k index]")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    index = args.index or default_index(args.cache)
    process, host, port = start_server(index, dict(os.environ))
    try:
        load(host, port, 2, min(2.0, args.seconds))  # warm: towers loaded, pages cached
        runs = []
        for clients in (int(c) for c in args.clients.split(",")):
            runs.append(load(host, port, clients, args.seconds))
            say(str(runs[-1]))
    finally:
        process.terminate()
        process.wait(timeout=15)
    command = "python bench/serve_bench.py " + " ".join(sys.argv[1:])
    result = {"command": command, "index": str(index), "runs": runs,
              "markdown": markdown(runs, command), "p95_target_ms": P95_TARGET_MS}  # fmt: skip
    write_json(OUT_FILE, result)
    print(result["markdown"])


if __name__ == "__main__":
    main()
