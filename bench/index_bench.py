"""Indexing benchmark for the README: photoseek against rclip, and where photoseek's time goes.

Run with the project's interpreter (it imports photoseek, torch and open_clip):

    .venv/bin/python bench/index_bench.py [--runs N] [--quick] [--cache DIR]
        [--quiet-wait S] [--py-spy PATH/TO/py-spy] [--out FILE]

Setup is idempotent and lives outside the repository (default cache: /work/bench-cache):
62 real photos from Debian's wallpaper packages, an rclip 3.3 peer with random ViT-B-32-256
weights, random-weight (seed 0) open_clip checkpoints for photoseek, and 10,000 small PNGs.
Weights are random on both sides: the numbers compare speed only, never search quality.

The machine may be shared: each timed sample first waits (up to --quiet-wait seconds) for other
processes to go idle, peers alternate, and every sample records the CPU others used meanwhile.
Ratios and CPU seconds are the numbers that survive a busy neighbour; wall times do not.

Measured (printed, and written to bench/out/index_bench.json):
  1. fresh index of the photos, each run a new process and an empty index, peers alternating;
  2. decode-only and model-only throughput, and the bf16 matmul ceiling for the model; from
     these, upper bounds on what any indexer could reach on this folder and machine, against
     the 5x target;
  3. re-indexing an unchanged 10,000-image collection (target: <= 2 s wall);
  4. when photoseek is below 5x rclip's images/s, a serial stage breakdown in a fresh process
     (and, with --py-spy, a sampled profile of one real run, summarised per thread).

The parts live in bench/indexing/ (one module each), the shared timing and setup in bench/lib/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from indexing.decode import bench_decode
from indexing.fresh import bench_fresh
from indexing.model import bench_model
from indexing.reindex import REINDEX_COUNT, bench_reindex
from indexing.report import markdown, target_bound
from indexing.stages import STAGES_FLAG, print_stages, py_spy_profile, stage_breakdown, stage_child
from lib import OUT_DIR
from lib.cache import DEFAULT_CACHE, Paths
from lib.machine import code_fingerprint, environment
from lib.peer import ensure_setup
from lib.script import add_quiet_wait, close_record, command_line, run_script, warn_if_code_changed
from lib.tables import say, write_json
from lib.timing import QuietGate

OUT_FILE = OUT_DIR / "index_bench.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--quick", action="store_true", help="1 run each, no 10k part")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="photos, peer, models")
    parser.add_argument("--out", type=Path, default=OUT_FILE, help="where the JSON goes")
    add_quiet_wait(parser)
    parser.add_argument("--py-spy", metavar="BIN", help="also sample one photoseek run with py-spy")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.quick:
        args.runs = 1
    return args


def measure(args: argparse.Namespace, paths: Paths, photos: list[Path], result: dict) -> QuietGate:
    """Parts 1 to 4 into `result`; returns the gate, whose waits the report records."""
    say(f"\n1. fresh index of {len(photos)} photos, {args.runs} run(s) each, alternating")
    gate = QuietGate(args.quiet_wait)
    result["fresh_index"] = bench_fresh(paths, photos, args.runs, gate)
    say("\n2a. decode only")
    result["decode"] = bench_decode(photos, args.runs, gate)
    say("\n2b. model only")
    result["model"] = bench_model(args.runs, gate)
    result["target_bound"] = target_bound(result)
    if not args.quick:
        say(f"\n3. re-index of an unchanged {REINDEX_COUNT:,}-image collection")
        result["reindex"] = bench_reindex(paths, args.runs, gate)
    if result["fresh_index"]["ratio_images_per_s_photoseek_over_rclip"] < 5:
        say("\n4. photoseek is below 5x rclip's images/s: stage breakdown")
        gate()
        result["stage_breakdown"] = stage_breakdown(paths)
        if args.py_spy:
            gate()
            result["py_spy"] = py_spy_profile(paths, args.py_spy)
    return gate


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    paths = Paths(args.cache.expanduser().resolve())
    paths.scratch.mkdir(parents=True, exist_ok=True)
    photos = ensure_setup(paths)
    result: dict = {
        "command": command_line("index_bench.py", argv),
        "environment": environment(paths),
    }
    fingerprint = code_fingerprint()
    gate = measure(args, paths, photos, result)
    close_record(result, gate, fingerprint)
    result["markdown"] = markdown(result)

    write_json(args.out, result)
    print_stages(result)
    say(f"\nwrote {args.out}\n\n{result['markdown']}")
    warn_if_code_changed(result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == [STAGES_FLAG]:
        stage_child(*sys.argv[2:4])
        sys.exit(0)
    run_script("index_bench", main)
