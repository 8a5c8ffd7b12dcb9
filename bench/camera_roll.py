"""Camera-roll benchmark: photoseek against rclip on a folder shaped like a phone's library.

Run with the project's interpreter (it imports photoseek, torch and open_clip):

    .venv/bin/python bench/camera_roll.py [--runs N] [--files N] [--seed S] [--cache DIR]
        [--quiet-wait S] [--out FILE]

The folder (bench/lib/roll.py) is made once per (seed, count) from the 62 shared photos and kept
in the cache (default /work/bench-cache): of every 20 files, 15 are 12 MP baseline 4:2:0 JPEGs
at quality 92 with EXIF (date, camera, orientation), 3 are 12 MP HEICs and 2 are 2560x1440 PNG
screenshots, each its own crop, no two alike. Both peers use the ViT-B-32-256 architecture with
random weights (rclip 3.3 through ../shared/tools/rclip-peer-setup.sh): speed only, never quality.

Measured (printed as markdown, and written to bench/out/camera_roll.json):
  1. a fresh index of the folder, each run a new process and an empty index, peers alternating:
     wall, images/s, peak RSS, CPU time (user+sys) of both, and photoseek / rclip;
  2. this machine's bounds on the folder: photoseek's decoder alone on all cores (at the model's
     input size), and decode + image tower at the matmul ceiling of the precision photoseek's
     tower ran in; against the target (5x rclip on a CPU with native bf16, 3x without).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from indexing.bounds import bench_ceiling, bench_decode_all_cores, photoseek_embedder
from indexing.fresh import bench_fresh
from lib import OUT_DIR
from lib.bounds import machine_bounds
from lib.cache import DEFAULT_CACHE, Paths
from lib.cpu import cpu_facts
from lib.machine import code_fingerprint, environment
from lib.peer import ensure_setup
from lib.roll import RollPaths, ensure_roll
from lib.script import add_quiet_wait, close_record, command_line, run_script, warn_if_code_changed
from lib.tables import say, table, write_json
from lib.timing import QuietGate

OUT_FILE = OUT_DIR / "camera_roll.json"
TARGET_X = {True: 5, False: 3}  # photoseek / rclip images/s, by native bf16


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--files", type=int, default=400, help="files in the camera roll")
    parser.add_argument("--seed", type=int, default=0, help="which camera roll to generate")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="photos, peer, models")
    parser.add_argument("--out", type=Path, default=OUT_FILE, help="where the JSON goes")
    add_quiet_wait(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.files < 1:
        parser.error("--files must be at least 1")
    return args


def measure(
    args: argparse.Namespace, paths: Paths, roll_paths: RollPaths, files: list[Path], result: dict
) -> QuietGate:
    """The fresh index, the embedder photoseek used, and the bounds, into `result`."""
    gate = QuietGate(args.quiet_wait)
    say(f"\n1. fresh index of the camera roll ({len(files)} files), {args.runs} run(s) each")
    result["fresh_index"] = bench_fresh(roll_paths, files, args.runs, gate)
    result["embedder"] = photoseek_embedder(paths, paths.scratch / "photoseek-index")
    say("\n2a. decode alone (photoseek's decoder, files in memory)")
    result["decode"] = bench_decode_all_cores(files, args.runs, gate)
    precision = result["embedder"]["precision"]
    say(f"\n2b. matmul ceiling in {precision}, the precision of photoseek's image tower")
    result["ceiling"] = bench_ceiling(precision, args.runs, gate)
    result["bounds"] = bounds(result)
    return gate


def bounds(result: dict) -> dict:
    """The target and this machine's two bounds on the folder, in images/s."""
    fresh, decode, ceiling = result["fresh_index"], result["decode"], result["ceiling"]
    times = TARGET_X[result["cpu"]["native_bf16"]]
    found = machine_bounds(
        fresh["photos"],
        result["cpu"]["cores"],
        decode["photoseek_decode_1_thread"]["images_per_s"],
        decode["photoseek_decode_all_cores"]["images_per_s"],
        ceiling["ceiling_images_per_s"],
        ceiling["torch_threads"],
    )
    target = times * fresh["rclip"]["images_per_s"]
    return {"target_x_rclip": times, "target_images_per_s": target} | found


def markdown(result: dict) -> str:
    env, cpu, embedder = result["environment"], result["cpu"], result["embedder"]
    lines = [
        f"`{result['command']}` — {cpu['label']}; torch {env['torch']}, rclip {env['rclip']} "
        f"(onnxruntime {env['onnxruntime (rclip)']}); photoseek's image tower: "
        f"{embedder['precision']} on {embedder.get('engine', '?')}; random weights.",
        "",
        *_index_table(result),
        "",
        *_bounds_table(result),
    ]
    by_format = result["decode"]["photoseek_decode_1_thread"]["by_format_ms_per_image"]
    lines += [
        "",
        "photoseek's decoder, one thread, ms per file: "
        + ", ".join(f"{ext} {ms:.1f}" for ext, ms in by_format.items())
        + ".",
    ]
    gate = env.get("quiet_gate")
    if gate and gate["max_wait_s"] > 0:
        lines.append(
            f"Shared machine: each timed sample waited (up to {gate['max_wait_s']:.0f} s) for "
            f"other processes to use < {gate['threshold_cores']} cores; "
            f"{gate['samples_started_while_busy']} sample(s) started while they were busy."
        )
    return "\n".join(lines)


def _index_table(result: dict) -> list[str]:
    fresh, folder = result["fresh_index"], result["folder"]
    ours, theirs = fresh["photoseek"], fresh["rclip"]
    kinds = folder["by_kind"]
    header = (
        f"Fresh index of a camera roll of {fresh['photos']} files ("
        + ", ".join(f"{v['files']} {k.upper()}" for k, v in kinds.items())
        + f"; {sum(v['megabytes'] for v in kinds.values()):.0f} MB), median of {len(ours['runs'])}"
    )
    rows = []
    for label, key, unit, digits in (
        ("wall time, new process", "wall_s_median", " s", 2),
        ("images/s", "images_per_s", "", 2),
        ("peak RSS", "peak_rss_mb_median", " MB", 0),
        ("CPU time (user+sys)", "cpu_s_median", " s", 1),
    ):
        mine, other = ours[key], theirs[key]
        rows.append([label, f"{mine:.{digits}f}{unit}", f"{other:.{digits}f}{unit}",
                     f"{mine / other:.2f}x"])  # fmt: skip
    rows += [
        ["CPU used by other processes meanwhile (shared machine)",
         f"{ours['others_cpu_s_median']:.1f} s", f"{theirs['others_cpu_s_median']:.1f} s", ""],
        ["first run, not counted (photoseek prepares its per-model caches once)",
         f"{ours['first_run_cold_tower_cache']['wall_s']:.2f} s",
         f"{theirs['first_run']['wall_s']:.2f} s", ""],
    ]  # fmt: skip
    return table([header, "photoseek", "rclip", "photoseek / rclip"], "lrrr", rows)


def _bounds_table(result: dict) -> list[str]:
    found, cpu, decode = result["bounds"], result["cpu"], result["decode"]
    ceiling, fresh = result["ceiling"], result["fresh_index"]
    rclip = fresh["rclip"]["images_per_s"]
    matmul = ceiling["matmul"]
    rate = matmul[f"{ceiling['precision']}_gflop_per_s"]
    bf16 = "native bf16" if cpu["native_bf16"] else "no native bf16"
    alone = found["decode_alone_all_cores_images_per_s"]
    both = found["decode_plus_model_at_ceiling_images_per_s"]
    rows = [
        [f"target: {found['target_x_rclip']}x rclip ({bf16})",
         f"{found['target_images_per_s']:.1f}", f"{found['target_x_rclip']:.2f}x"],
        [f"bound: photoseek's decoder alone at {decode['size']} px on all {cpu['cores']} cores",
         f"{alone:.1f}", f"{alone / rclip:.2f}x"],
        [f"bound: decode + image tower at the {ceiling['precision']} matmul ceiling "
         f"({rate:.0f} GFLOP/s / {ceiling['flops']['gflops']:.1f} GFLOP per image), perfectly "
         "shared over the cores, no start-up", f"{both:.1f}", f"{both / rclip:.2f}x"],
        ["photoseek, measured", f"{fresh['photoseek']['images_per_s']:.1f}",
         f"{fresh['ratio_images_per_s_photoseek_over_rclip']:.2f}x"],
    ]  # fmt: skip
    return table(["The target against this machine's bounds", "images/s", "x rclip"], "lrr", rows)


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    paths = Paths(args.cache.expanduser().resolve())
    paths.scratch.mkdir(parents=True, exist_ok=True)
    roll = ensure_roll(paths, ensure_setup(paths), args.files, args.seed)
    folder = {k: v for k, v in roll.manifest.items() if k not in ("names", "shots")}
    result: dict = {
        "command": command_line("camera_roll.py", argv),
        "cpu": cpu_facts(),
        "environment": environment(paths),
        "folder": folder | {"path": roll.folder},
    }
    fingerprint = code_fingerprint()
    gate = measure(args, paths, RollPaths(paths.cache, roll.folder), roll.files, result)
    close_record(result, gate, fingerprint)
    result["markdown"] = markdown(result)
    write_json(args.out, result)
    say(f"\nwrote {args.out}\n\n{result['markdown']}")
    warn_if_code_changed(result)
    return result


if __name__ == "__main__":
    run_script("camera_roll", main)
