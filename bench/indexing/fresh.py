"""Part 1: a fresh index of the photos, photoseek against rclip, each run a new process."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sqlite3
from pathlib import Path

from lib.cache import Paths
from lib.peer import peer_env, photoseek_index_cmd, rclip_cmd
from lib.tables import say
from lib.timing import BenchError, QuietGate, Run, alternating, median, run_child, shell


def run_photoseek(paths: Paths, expected: int) -> tuple[Run, dict]:
    index = paths.scratch / "photoseek-index"
    shutil.rmtree(index, ignore_errors=True)
    run = run_child(photoseek_index_cmd(paths, index), env=peer_env(paths), what="photoseek index")
    summary = json.loads(run.stdout)
    if summary.get("added") != expected or summary.get("errors"):
        raise BenchError(f"photoseek indexed {summary} of {expected} photos")
    return run, summary


def run_rclip(paths: Paths, expected: int) -> Run:
    db = paths.rclip_data / "db.sqlite3"  # rclip keeps its index at $RCLIP_DATADIR/db.sqlite3
    for stale in paths.rclip_data.glob("db.sqlite3*"):
        stale.unlink()
    run = run_child(rclip_cmd(paths), cwd=paths.photos, env=peer_env(paths), what="rclip")
    with contextlib.closing(sqlite3.connect(db)) as con:
        (count,) = con.execute("SELECT COUNT(*) FROM images WHERE deleted IS NULL").fetchone()
    if count != expected:
        raise BenchError(f"rclip indexed {count} of {expected} photos")
    return run


def bench_fresh(paths: Paths, photos: list[Path], runs: int, gate: QuietGate) -> dict:
    n = len(photos)
    # Not counted: fills the page cache and proves both peers work. photoseek's first index with
    # a model also exports that model's ONNX query towers into a per-user cache, once; emptying
    # that cache first makes this run the "first index ever" number, reported apart.
    say("fresh index: first run of each peer (not counted; photoseek's tower cache emptied)")
    shutil.rmtree(paths.xdg_cache, ignore_errors=True)
    gate()
    first_ours, first_summary = run_photoseek(paths, n)
    gate()
    first_theirs = run_rclip(paths, n)
    say(f"  first     photoseek {first_ours.wall_s:6.2f} s   rclip {first_theirs.wall_s:6.2f} s")
    ours: list[Run] = []
    ours_seconds: list[float] = []
    theirs: list[Run] = []
    for i, peer in alternating(runs, "photoseek", "rclip"):
        gate()
        if peer == "photoseek":
            run, summary = run_photoseek(paths, n)
            ours.append(run)
            ours_seconds.append(summary["seconds"])
        else:
            run = run_rclip(paths, n)
            theirs.append(run)
        say(
            f"  run {i + 1}/{runs} {peer:9s} {run.wall_s:6.2f} s  {run.peak_rss_mb:6.0f} MB"
            f"   (others used {run.others_cpu_s:4.1f} CPU s meanwhile)"
        )
    query_only = run_child(
        rclip_cmd(paths, no_indexing=True), cwd=paths.photos, env=peer_env(paths), what="rclip -n"
    )
    ours_wall, theirs_wall = median([r.wall_s for r in ours]), median([r.wall_s for r in theirs])
    return {
        "photos": n,
        "photoseek": _side(ours, n)
        | {
            "own_seconds_median": median(ours_seconds),
            "first_run_cold_tower_cache": first_ours.public()
            | {"own_seconds": first_summary["seconds"]},
        },
        "rclip": _side(theirs, n)
        | {
            "search_only_wall_s": round(query_only.wall_s, 3),
            "first_run": first_theirs.public(),
        },
        "ratio_wall_photoseek_over_rclip": ours_wall / theirs_wall,
        "ratio_images_per_s_photoseek_over_rclip": theirs_wall / ours_wall,
        "commands": _commands(paths),
    }


def _commands(paths: Paths) -> dict[str, str]:
    """The two timed commands, as a reader would type them."""
    return {
        "photoseek": shell(photoseek_index_cmd(paths, paths.scratch / "photoseek-index")),
        "rclip": f"cd {shlex.quote(str(paths.photos))} && RCLIP_DATADIR="
        f"{shlex.quote(str(paths.rclip_data))} {shell(rclip_cmd(paths))}",
    }


def _side(runs: list[Run], n: int) -> dict:
    wall = median([r.wall_s for r in runs])
    return {
        "runs": [r.public() for r in runs],
        "wall_s_median": wall,
        "images_per_s": n / wall,
        "peak_rss_mb_median": median([r.peak_rss_mb for r in runs]),
        "cpu_s_median": median([r.cpu_s for r in runs]),
        "others_cpu_s_median": median([r.others_cpu_s for r in runs]),
    }
