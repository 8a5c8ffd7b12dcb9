"""Peak memory of a first index of ViT-B-32: the largest process, and the whole tree at once.

A first index on a fresh machine exports the query towers (and, on a CPU without native bf16,
builds the int8 image engine) in child processes while the indexer waits. `/usr/bin/time -v`
reports the largest single process of the tree; the user's machine must hold the parent and
its live children together. So each run starts `photoseek index` with a fresh XDG_CACHE_HOME
and a new index, and samples the RSS of every live process of its tree from /proc every
--interval seconds: the tree's concurrent peak is the largest sum seen, the largest process's
peak is wait4's ru_maxrss for the indexer (exact, not sampled), as `/usr/bin/time -v` has it.

Paths: bf16 (`--precision bf16`, what `auto` picks on a CPU with AVX512-BF16/AMX) and int8
(`--precision int8`, what `auto` picks on a CPU without: the int8 engine is built then).

Usage: python bench/first_index_memory.py [--cache /work/bench-cache] [--paths bf16 int8]
       [--interval 0.025] [--json bench/out/first_index_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib import OUT_DIR, REPO
from lib.cache import DEFAULT_CACHE
from lib.machine import cpu_model
from lib.tables import say, table, write_json

ARCH, CHECKPOINT = "ViT-B-32", "models/vit-b-32-random-seed0.pt"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # it ended between listing and reading


def _label(pid: int) -> str:
    """What a process of the tree is: the indexer, or the export job a child runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if b"indexer.towers.export_job" in argv:
        return "child: " + json.loads(argv[argv.index(b"indexer.towers.export_job") + 1])["job"]
    return Path(argv[0].decode()).name if argv[0] else "?"


def tree_rss(root: int) -> dict[int, int]:
    """RSS of `root` and each of its live descendants, by process id."""
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        found[pid] = _rss(pid)
        todo += _children(pid)
    return found


def measure(path: str, photos: Path, checkpoint: Path, interval: float) -> dict:
    """One first index with `--precision path` in fresh folders: both peaks, in bytes."""
    with tempfile.TemporaryDirectory(prefix="photoseek-mem-") as scratch:
        env = {**os.environ, "XDG_CACHE_HOME": f"{scratch}/cache", "HF_HUB_OFFLINE": "1"}
        photoseek = Path(sys.executable).with_name("photoseek")
        command = [str(photoseek), "index", str(photos), "--index", f"{scratch}/index",
                   "--model", f"{ARCH}:{checkpoint}", "--precision", path]  # fmt: skip
        start = time.monotonic()
        with open(f"{scratch}/stderr", "w+") as err:
            child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
            peak, peak_at, at_peak, done = 0, 0.0, {}, 0
            while not done:
                sizes = tree_rss(child.pid)
                if sum(sizes.values()) > peak:
                    peak, peak_at = sum(sizes.values()), time.monotonic() - start
                    at_peak = {f"{_label(pid)} ({pid})": rss for pid, rss in sizes.items()}
                time.sleep(interval)
                # wait4's ru_maxrss: the largest of the child and its waited-for descendants
                done, status, usage = os.wait4(child.pid, os.WNOHANG)
            child.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.monotonic() - start
            err.seek(0)
            said = err.read()
    if child.returncode != 0:
        raise SystemExit(f"photoseek index ({path}) failed: {said.strip()[-400:]}")
    largest = usage.ru_maxrss * 1024  # KiB on Linux
    return {"precision": path, "largest_process_bytes": largest, "tree_peak_bytes": peak,
            "tree_peak_at_s": peak_at, "at_tree_peak": at_peak, "seconds": seconds}  # fmt: skip


def _row(result: dict) -> list[str]:
    parts = " + ".join(
        f"{name.rsplit(' (', 1)[0]} {rss / 1e9:.2f}" for name, rss in result["at_tree_peak"].items()
    )
    return [
        result["precision"],
        f"{result['largest_process_bytes'] / 1e9:.2f}",
        f"{result['tree_peak_bytes'] / 1e9:.2f}",
        f"{result['tree_peak_at_s']:.1f}",
        f"{result['seconds']:.1f}",
        parts,
        f"{result['loadavg'][0]:.1f}",
    ]


HEADER = ["path", "largest process GB", "tree peak GB", "peak at s", "run s",
          "processes at the tree peak (GB)", "load"]  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--paths", nargs="+", default=["bf16", "int8"], choices=["bf16", "int8"])
    parser.add_argument("--interval", type=float, default=0.025)
    parser.add_argument("--json", type=Path, default=OUT_DIR / "first_index_memory.json")
    args = parser.parse_args(argv)
    photos, checkpoint = args.cache / "photos", args.cache / CHECKPOINT
    results = []
    for path in args.paths:
        results.append(measure(path, photos, checkpoint, args.interval))
        results[-1]["loadavg"] = os.getloadavg()  # times depend on it, memory does not
    say(f"first index of {ARCH} ({len(list(photos.iterdir()))} photos), CPU: {cpu_model()}")
    for line in table(HEADER, "lrrrrlr", [_row(r) for r in results]):
        say(line)
    write_json(args.json, {"cpu": cpu_model(), "runs": results, "repo": str(REPO)})


if __name__ == "__main__":
    main(sys.argv[1:])
