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
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path("/work/shared/tools")
DEFAULT_CACHE = Path("/work/bench-cache")
OUT_FILE = REPO / "bench" / "out" / "index_bench.json"

ARCH = "ViT-B-32-256"
TINY_ARCH = "photoseek-tiny"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
RCLIP_QUERY = "a query"
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
REINDEX_COUNT = 10_000
REINDEX_TARGET_S = 2.0
BATCH = 32
STAGES_FLAG = "--stage-breakdown-child"  # internal: run the stage breakdown in this process


class BenchError(Exception):
    """A setup step or a benchmarked command failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Child processes, timed with their own rusage


@dataclass
class Run:
    """One timed child process."""

    wall_s: float
    peak_rss_mb: float  # ru_maxrss of the child (the largest process in its tree)
    cpu_s: float  # user + system CPU of the child
    others_cpu_s: float  # CPU that other processes used meanwhile (the machine is shared)
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    def public(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items() if k not in ("stdout", "stderr")}


# A child's ru_maxrss includes the memory of the process it was forked from (Linux records the
# old address space's high-water mark at exec), and this benchmark's own process grows to GBs.
# So each command is started by a small fresh interpreter that forks it and reports its rusage.
_MEASURER = """
import json, os, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as f:
    json.dump({"wall": wall, "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "code": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str = "",
) -> Run:
    """Run `cmd` to completion: its wall time, peak RSS and CPU, and what else ran meanwhile."""
    args = [os.fspath(c) for c in cmd]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".json") as report,
    ):
        busy_before = machine_busy_s()
        measurer = [sys.executable, "-I", "-S", "-c", _MEASURER, report.name, *args]
        code = subprocess.run(measurer, cwd=cwd, env=env, stdout=out, stderr=err).returncode
        busy = machine_busy_s() - busy_before
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        measured = json.loads(report.read() or "{}")
    code = measured.get("code", code)
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise BenchError(f"{what or args[0]} exited {code}:\n  $ {_shell(cmd)}\n{tail}")
    cpu = measured["cpu"]
    others = max(0.0, busy - cpu)
    return Run(measured["wall"], measured["maxrss_kb"] / 1024, cpu, others, stdout, stderr)


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (from /proc/stat; 0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class QuietGate:
    """Before each timed sample, waits (bounded) until other processes leave the CPUs alone.

    The machine may be shared: a busy neighbour on 2 cores halves a 2-thread decode and can
    stall torch's thread pool far more. Each sample still records what others used meanwhile.
    After a wait that ran out, later waits are short until the machine is seen quiet again, so
    a neighbour busy for the whole run costs little extra time.
    """

    max_wait_s: float
    threshold_cores: float = 0.25
    waited_s: float = 0.0
    gave_up: int = 0  # samples started while others were still busy
    busy_spell: bool = False  # the last wait ran out
    others_cpu_s: list[float] = field(default_factory=list)  # per in-process pass

    def __call__(self) -> None:
        started, quiet_windows = time.perf_counter(), 0
        limit = min(self.max_wait_s, 3.0) if self.busy_spell else self.max_wait_s
        while self.max_wait_s > 0 and quiet_windows < 2:
            if time.perf_counter() - started > limit:
                self.gave_up += 1
                self.busy_spell = True
                break
            busy, mine = machine_busy_s(), own_cpu_s()
            time.sleep(window_s := 0.5)
            others = machine_busy_s() - busy - (own_cpu_s() - mine)
            quiet = others < self.threshold_cores * window_s
            quiet_windows = quiet_windows + 1 if quiet else 0
        if quiet_windows >= 2:
            self.busy_spell = False
        self.waited_s += time.perf_counter() - started

    def report(self) -> dict:
        return {
            "max_wait_s": self.max_wait_s,
            "threshold_cores": self.threshold_cores,
            "waited_s": round(self.waited_s, 1),
            "samples_started_while_busy": self.gave_up,
            "others_cpu_s_per_in_process_pass": [round(v, 2) for v in self.others_cpu_s],
        }


def _shell(cmd: Sequence[str | os.PathLike[str]]) -> str:
    return " ".join(shlex.quote(os.fspath(c)) for c in cmd)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------
# Setup (each step skips what is already there)


@dataclass(frozen=True)
class Paths:
    """Everything the benchmark keeps in its cache directory."""

    cache: Path

    @property
    def photos(self) -> Path:
        return self.cache / "photos"

    @property
    def photos_done(self) -> Path:
        return self.cache / "photos.complete"

    @property
    def peer(self) -> Path:
        return self.cache / "rclip-peer"

    @property
    def rclip(self) -> Path:
        return self.peer / "venv" / "bin" / "rclip"

    @property
    def rclip_data(self) -> Path:
        return self.peer / "data"

    @property
    def checkpoint(self) -> Path:
        return self.cache / "models" / "vit-b-32-256-random-seed0.pt"

    @property
    def tiny_checkpoint(self) -> Path:
        return self.cache / "models" / "photoseek-tiny-random-seed0.pt"

    @property
    def many(self) -> Path:
        return self.cache / "reindex-10k" / "images"

    @property
    def many_done(self) -> Path:
        return self.cache / "reindex-10k" / "images.complete"

    @property
    def many_index(self) -> Path:
        return self.cache / "reindex-10k" / "index"

    @property
    def many_index_done(self) -> Path:
        return self.cache / "reindex-10k" / "index.complete"

    @property
    def xdg_cache(self) -> Path:
        return self.cache / "xdg-cache"

    @property
    def scratch(self) -> Path:
        return self.cache / "scratch"


def image_files(folder: Path) -> list[Path]:
    """The images under `folder` that both peers index, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def ensure_photos(paths: Paths) -> list[Path]:
    if not paths.photos_done.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            raise BenchError("fetching photos needs apt-get and dpkg (a Debian/Ubuntu machine)")
        _say(f"setup: fetching photos into {paths.photos} (about 110 MB from Debian packages)")
        fetch = [TOOLS / "fetch-photos.sh", paths.photos]
        try:
            run_child(fetch, what="fetch-photos.sh")
        except BenchError:
            _say("setup: download failed; running apt-get update once and retrying")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            try:
                run_child(fetch, what="fetch-photos.sh")
            except BenchError as e:
                raise BenchError(
                    f"could not fetch the photos (apt-get download of Debian wallpaper packages "
                    f"failed even after apt-get update; is a Debian mirror reachable?)\n{e}"
                ) from None
        found = image_files(paths.photos)
        if not found:
            raise BenchError(f"fetch-photos.sh put no images in {paths.photos}")
        paths.photos_done.write_text(f"{len(found)}\n")
    photos = image_files(paths.photos)
    if not photos:
        raise BenchError(f"no photos in {paths.photos}; delete {paths.photos_done} to refetch")
    return photos


def ensure_peer(paths: Paths) -> None:
    visual = paths.rclip_data / RCLIP_MODEL_SUBDIR / "visual.onnx"
    if paths.rclip.exists() and visual.exists():
        return
    _say(f"setup: installing the rclip peer into {paths.peer} (pip, then an ONNX export)")
    run_child(
        [TOOLS / "rclip-peer-setup.sh", paths.peer, sys.executable], what="rclip-peer-setup.sh"
    )
    if not (paths.rclip.exists() and visual.exists()):
        raise BenchError(f"rclip-peer-setup.sh finished but {paths.rclip} or {visual} is missing")


def ensure_checkpoint(path: Path, arch: str) -> None:
    """Random open_clip weights (seed 0) for `arch`, saved once as a state_dict."""
    if path.exists():
        return
    _say(f"setup: saving random {arch} weights (seed 0) to {path}")
    import open_clip
    import torch

    from indexer.models.loading import register_configs

    register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(path)


def ensure_many_images(paths: Paths) -> None:
    """10,000 distinct 64x64 noise PNGs in nested folders (20 x 10 folders of 50)."""
    if paths.many_done.exists():
        return
    import numpy as np
    from PIL import Image

    _say(f"setup: writing {REINDEX_COUNT} small PNGs under {paths.many}")
    shutil.rmtree(paths.many, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(REINDEX_COUNT):
        folder = paths.many / f"set{i // 500:02d}" / f"roll{i // 50 % 10}"
        if i % 50 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        pixels[0, 0] = (i >> 16, (i >> 8) & 255, i & 255)  # distinct even if the noise repeated
        Image.fromarray(pixels).save(folder / f"img{i:05d}.png", compress_level=1)
    paths.many_done.write_text(f"{REINDEX_COUNT}\n")


# ---------------------------------------------------------------------------------------------
# 1. Fresh index of the photos: photoseek vs rclip


def peer_env(paths: Paths) -> dict[str, str]:
    """Offline, and photoseek's per-user caches (its exported ONNX towers) kept in the cache dir."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        RCLIP_DATADIR=str(paths.rclip_data),
        XDG_CACHE_HOME=str(paths.xdg_cache),
    )
    env.pop("PHOTOSEEK_INDEX", None)
    return env


def photoseek_bin() -> Path:
    found = Path(sys.executable).parent / "photoseek"
    if not found.exists():
        raise BenchError(f"no photoseek CLI beside {sys.executable}; install the project first")
    return found


def photoseek_cmd(paths: Paths, index: Path) -> list[str | os.PathLike[str]]:
    model = f"{ARCH}:{paths.checkpoint}"
    return [photoseek_bin(), "index", paths.photos, "--index", index, "--model", model, "--json"]


def run_photoseek(paths: Paths, expected: int) -> tuple[Run, dict]:
    index = paths.scratch / "photoseek-index"
    shutil.rmtree(index, ignore_errors=True)
    run = run_child(photoseek_cmd(paths, index), env=peer_env(paths), what="photoseek index")
    summary = json.loads(run.stdout)
    if summary.get("added") != expected or summary.get("errors"):
        raise BenchError(f"photoseek indexed {summary} of {expected} photos")
    return run, summary


def rclip_cmd(paths: Paths, *, no_indexing: bool = False) -> list[str | os.PathLike[str]]:
    return [paths.rclip, *(["-n"] if no_indexing else []), "-t", "10", RCLIP_QUERY]


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
    _say("fresh index: first run of each peer (not counted; photoseek's tower cache emptied)")
    shutil.rmtree(paths.xdg_cache, ignore_errors=True)
    gate()
    first_ours, first_summary = run_photoseek(paths, n)
    gate()
    first_theirs = run_rclip(paths, n)
    _say(f"  first     photoseek {first_ours.wall_s:6.2f} s   rclip {first_theirs.wall_s:6.2f} s")
    ours: list[Run] = []
    ours_seconds: list[float] = []
    theirs: list[Run] = []
    for i in range(runs):
        order = ("photoseek", "rclip") if i % 2 == 0 else ("rclip", "photoseek")
        for peer in order:
            gate()
            if peer == "photoseek":
                run, summary = run_photoseek(paths, n)
                ours.append(run)
                ours_seconds.append(summary["seconds"])
            else:
                run = run_rclip(paths, n)
                theirs.append(run)
            _say(
                f"  run {i + 1}/{runs} {peer:9s} {run.wall_s:6.2f} s  {run.peak_rss_mb:6.0f} MB"
                f"   (others used {run.others_cpu_s:4.1f} CPU s meanwhile)"
            )
    query_only = run_child(
        rclip_cmd(paths, no_indexing=True), cwd=paths.photos, env=peer_env(paths), what="rclip -n"
    )
    ours_wall, theirs_wall = _median([r.wall_s for r in ours]), _median([r.wall_s for r in theirs])
    return {
        "photos": n,
        "photoseek": _side(ours, n)
        | {
            "own_seconds_median": _median(ours_seconds),
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
        "commands": {
            "photoseek": _shell(photoseek_cmd(paths, paths.scratch / "photoseek-index")),
            "rclip": f"cd {shlex.quote(str(paths.photos))} && RCLIP_DATADIR="
            f"{shlex.quote(str(paths.rclip_data))} {_shell(rclip_cmd(paths))}",
        },
    }


def _side(runs: list[Run], n: int) -> dict:
    wall = _median([r.wall_s for r in runs])
    return {
        "runs": [r.public() for r in runs],
        "wall_s_median": wall,
        "images_per_s": n / wall,
        "peak_rss_mb_median": _median([r.peak_rss_mb for r in runs]),
        "cpu_s_median": _median([r.cpu_s for r in runs]),
        "others_cpu_s_median": _median([r.others_cpu_s for r in runs]),
    }


# ---------------------------------------------------------------------------------------------
# 2a. Decode-only throughput


def bench_decode(photos: list[Path], runs: int, gate: QuietGate) -> dict:
    from PIL import Image

    from indexer.media import decode as decoding

    files = [(p.read_bytes(), p.suffix.lower().lstrip("."), p.suffix.lower()) for p in photos]
    per_format: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def ours_single() -> None:
        for data, ext, suffix in files:
            started = time.perf_counter()
            decoding.decode(data, ext, 256)
            per_format["photoseek_decode_1_thread"][suffix].append(time.perf_counter() - started)

    def ours_threads() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda f: decoding.decode(f[0], f[1], 256), files))

    def pillow_full() -> None:
        for data, _, suffix in files:
            started = time.perf_counter()
            with Image.open(io.BytesIO(data)) as image:
                image.convert("RGB")
            per_format["pillow_full_decode_1_thread"][suffix].append(time.perf_counter() - started)

    variants = {
        "photoseek_decode_1_thread": ours_single,
        "photoseek_decode_2_threads": ours_threads,
        "pillow_full_decode_1_thread": pillow_full,
    }
    times = _alternate(variants, runs, "decode", gate)
    result = {
        name: {"seconds": t, "images_per_s": len(files) / _median(t)} for name, t in times.items()
    }
    for name, by_suffix in per_format.items():
        result[name]["by_format_ms_per_image"] = {
            suffix: round(1000 * statistics.fmean(v), 1) for suffix, v in sorted(by_suffix.items())
        }
    result["formats"] = dict(Counter(suffix for _, _, suffix in files))
    return result


def _alternate(
    variants: dict[str, Callable[[], None]], runs: int, label: str, gate: QuietGate
) -> dict:
    """Each variant `runs` times, interleaved so that background load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        for name, fn in variants.items():
            gate()
            busy, mine, started = machine_busy_s(), own_cpu_s(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
            others = max(0.0, machine_busy_s() - busy - (own_cpu_s() - mine))
            gate.others_cpu_s.append(others)
            _say(
                f"  {label} pass {i + 1}/{runs} {name:30s} {times[name][-1]:6.2f} s"
                f"   (others used {others:4.1f} CPU s meanwhile)"
            )
    return times


# ---------------------------------------------------------------------------------------------
# 2b. Model-only throughput and the bf16 matmul ceiling


def vit_gflops_per_image(arch: str) -> dict:
    """Image-tower GFLOPs: 12 x (4d^2T + 2T^2d + 8d^2T) multiply-adds x 2, plus patch embedding."""
    import open_clip

    cfg = open_clip.get_model_config(arch)["vision_cfg"]
    d, layers, patch = cfg["width"], cfg["layers"], cfg["patch_size"]
    grid = cfg["image_size"] // patch
    tokens = grid * grid + 1
    blocks = layers * (4 * d * d * tokens + 2 * tokens * tokens * d + 8 * d * d * tokens)
    patch_embed = grid * grid * 3 * patch * patch * d
    projection = d * open_clip.get_model_config(arch)["embed_dim"]
    return {
        "width": d,
        "tokens": tokens,
        "layers": layers,
        "gflops": 2 * (blocks + patch_embed + projection) / 1e9,
    }


def bench_model(runs: int, gate: QuietGate) -> dict:
    import open_clip
    import torch

    torch.manual_seed(0)
    fp32 = open_clip.create_model(ARCH).eval()
    bf16 = open_clip.create_model(ARCH).eval().to(torch.bfloat16)
    x32 = torch.randn(BATCH, 3, 256, 256)
    x16 = x32.to(torch.bfloat16)
    flops = vit_gflops_per_image(ARCH)
    gemms = GemmSuite(flops["tokens"] * BATCH, flops["width"])
    with torch.inference_mode():
        for model, x in ((fp32, x32), (bf16, x16)):  # warm-up: oneDNN primitives, allocator
            model.encode_image(x)
        gemms()
        variants = {
            "fp32": lambda: fp32.encode_image(x32),
            "bf16": lambda: bf16.encode_image(x16),
            "bf16 GEMMs": gemms,  # interleaved, so background load hits it like the model
        }
        times = _alternate(variants, max(runs, 3), "model batch 32", gate)
    del times["bf16 GEMMs"]
    result: dict = {"batch": BATCH, "torch_threads": torch.get_num_threads(), "flops": flops}
    for name, t in times.items():
        ips = BATCH / _median(t)
        result[name] = {
            "batch_seconds": t,
            "images_per_s": ips,
            "gflop_per_s": ips * flops["gflops"],
        }
    matmul = gemms.report()
    ceiling = matmul["bf16_gflop_per_s"] / flops["gflops"]
    result["bf16_matmul"] = matmul | {"ceiling_images_per_s": ceiling}
    result["bf16_fraction_of_matmul_ceiling"] = result["bf16"]["images_per_s"] / ceiling
    result["bf16_fraction_of_layer_gemm_ceiling"] = (
        result["bf16"]["gflop_per_s"] / matmul["bf16_layer_gemms_gflop_per_s"]
    )
    return result


class GemmSuite:
    """The four GEMMs of one transformer block at batch 32, in bf16, timed for a ceiling.

    qkv [BT,d]x[d,3d], out [BT,d]x[d,d], fc1 [BT,d]x[d,4d], fc2 [BT,4d]x[4d,d]. The ceiling is the
    best rate any of them reaches (what bf16 matmul allows on this CPU); the layer rate is what a
    block's GEMMs would take if each ran at its own best measured speed.
    """

    def __init__(self, rows: int, d: int, reps: int = 5) -> None:
        import torch

        self.reps = reps
        self.shapes = {"qkv": (rows, d, 3 * d), "out": (rows, d, d)}
        self.shapes |= {"fc1": (rows, d, 4 * d), "fc2": (rows, 4 * d, d)}
        self.operands = {
            name: (torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16))
            for name, (m, k, n) in self.shapes.items()
        }
        self.best: dict[str, float] = {}  # seconds per GEMM

    def __call__(self) -> None:
        for name, (a, b) in self.operands.items():
            for _ in range(self.reps):
                started = time.perf_counter()
                a @ b
                took = time.perf_counter() - started
                self.best[name] = min(took, self.best.get(name, took))

    def report(self) -> dict:
        flop = {name: 2 * m * k * n for name, (m, k, n) in self.shapes.items()}
        rate = {name: flop[name] / self.best[name] / 1e9 for name in flop}
        return {
            "shapes_m_k_n": self.shapes,
            "gflop_per_s_by_gemm": rate,
            "bf16_gflop_per_s": max(rate.values()),
            "bf16_layer_gemms_gflop_per_s": sum(flop.values()) / sum(self.best.values()) / 1e9,
        }


# ---------------------------------------------------------------------------------------------
# 3. Re-index of an unchanged 10,000-image collection


def bench_reindex(paths: Paths, runs: int, gate: QuietGate) -> dict:
    ensure_many_images(paths)
    ensure_checkpoint(paths.tiny_checkpoint, TINY_ARCH)
    initial = ensure_many_index(paths)
    cmd = [photoseek_bin(), "index", "--index", paths.many_index, "--json"]
    try:  # not counted: warms the page cache, and proves the cached index is still current
        reindex_once(paths, cmd)
    except BenchError as e:  # e.g. built by an older photoseek: build it again, once
        _say(f"reindex: rebuilding the cached 10k index ({e})")
        paths.many_index_done.unlink(missing_ok=True)
        initial = ensure_many_index(paths)
        reindex_once(paths, cmd)
    timed, own = [], []
    for i in range(runs):
        gate()
        run, summary = reindex_once(paths, cmd)
        timed.append(run)
        own.append(summary["seconds"])
        _say(
            f"  re-index {i + 1}/{runs} {run.wall_s:6.2f} s  {run.peak_rss_mb:6.0f} MB"
            f"   (others used {run.others_cpu_s:4.1f} CPU s meanwhile)"
        )
    wall = _median([r.wall_s for r in timed])
    return {
        "images": REINDEX_COUNT,
        "initial_index_tiny_model": initial,
        "runs": [r.public() for r in timed],
        "wall_s_median": wall,
        "own_seconds_median": _median(own),
        "peak_rss_mb_median": _median([r.peak_rss_mb for r in timed]),
        "target_wall_s": REINDEX_TARGET_S,
        "meets_target": wall <= REINDEX_TARGET_S,
        "command": _shell(cmd),
    }


def ensure_many_index(paths: Paths) -> dict:
    """The 10k images indexed once with the tiny model; returns how that first run went."""
    if paths.many_index_done.exists():
        return json.loads(paths.many_index_done.read_text())
    _say(f"reindex: first index of {REINDEX_COUNT} images with {TINY_ARCH} (once)")
    shutil.rmtree(paths.many_index, ignore_errors=True)
    model = f"{TINY_ARCH}:{paths.tiny_checkpoint}"
    cmd = [photoseek_bin(), "index", paths.many, "--index", paths.many_index]
    run = run_child([*cmd, "--model", model, "--json"], env=peer_env(paths), what="10k index")
    summary = json.loads(run.stdout)
    if summary["added"] != REINDEX_COUNT or summary["errors"]:
        raise BenchError(f"the 10k index came out as {summary}")
    initial = run.public() | {"summary": summary, "images_per_s": REINDEX_COUNT / run.wall_s}
    paths.many_index_done.write_text(json.dumps(initial) + "\n")
    return initial


def reindex_once(paths: Paths, cmd: list) -> tuple[Run, dict]:
    run = run_child(cmd, env=peer_env(paths), what="photoseek re-index (10k)")
    summary = json.loads(run.stdout)
    changed = any(summary[k] for k in ("added", "updated", "removed", "errors"))
    if changed or summary["unchanged"] != REINDEX_COUNT:
        raise BenchError(f"re-index of the unchanged collection changed something: {summary}")
    return run, summary


# ---------------------------------------------------------------------------------------------
# 4. Where photoseek's time goes


def stage_breakdown(paths: Paths) -> dict:
    """Each indexing stage run alone, in order, in a fresh process (no overlap)."""
    cmd = [sys.executable, Path(__file__).resolve(), STAGES_FLAG, paths.photos, paths.checkpoint]
    run = run_child(cmd, env=peer_env(paths), what="stage breakdown")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _stage_child(photo_dir: str, checkpoint: str) -> None:
    """The stage breakdown itself (runs in the child started by `stage_breakdown`)."""
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = round(now - clock, 3)
        clock = now

    import torch  # noqa: F401 - timed: the import is the stage

    lap("import torch")
    import open_clip  # noqa: F401 - timed: the import is the stage

    lap("import open_clip (pulls in torchvision, timm, torch._dynamo)")
    from indexer.media import decode as decoding
    from indexer.models.embedder import ImageEmbedder
    from indexer.models.loading import ModelSpec, load_model

    lap("import photoseek indexer")
    loaded = load_model(ModelSpec.parse(f"{ARCH}:{checkpoint}"), "auto", towers="image")
    lap(f"load_model, image tower only, as indexing does ({loaded.dtype})")
    clock = time.perf_counter()
    photos = image_files(Path(photo_dir))
    files = [(p.read_bytes(), p.suffix.lower().lstrip(".")) for p in photos]
    lap("read files")
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda f: decoding.decode(f[0], f[1], loaded.image_size), files))
    lap(f"decode ({workers} threads)")
    embed = ImageEmbedder(loaded)
    import numpy as np

    for start in range(0, len(decoded), BATCH):
        embed(np.stack([d.pixels for d in decoded[start : start + BATCH]]))
    lap(f"embed (batches of {BATCH}, first batch included)")
    print(json.dumps({"photos": len(files), "stages_s": stages}))


def py_spy_profile(paths: Paths, py_spy: str) -> dict:
    """Sample one real photoseek run (all threads, idle included) and sum by thread and stage."""
    index = paths.scratch / "photoseek-index-profiled"
    shutil.rmtree(index, ignore_errors=True)
    raw = paths.scratch / "photoseek.pyspy.txt"
    cmd = [py_spy, "record", "--threads", "--idle", "-r", "100", "-f", "raw", "-o", raw, "--"]
    run_child(
        [*cmd, sys.executable, *photoseek_cmd(paths, index)], env=peer_env(paths), what="py-spy"
    )
    per_thread: dict[str, Counter] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].rpartition(":")[2].strip() or frames[0]
        per_thread[thread][_stage_of(frames[1:])] += int(count)
    return {
        "raw": str(raw),
        "seconds_by_thread": {
            thread: {stage: n / 100 for stage, n in counts.most_common()}
            for thread, counts in per_thread.items()
            if sum(counts.values()) >= 50
        },
    }


_STAGE_RULES = (  # first match wins; matched against the joined stack
    ("install_towers", "", "ONNX query towers: export or copy"),
    ("_load_model", "_find_and_load", "model thread: import torch/open_clip"),
    ("_load_model", "serialization", "model thread: torch.load checkpoint"),
    ("_load_model", "load_state_dict", "model thread: load_state_dict"),
    ("_load_model", "create_model", "model thread: create_model (random init)"),
    ("_load_model", "Module.to", "model thread: .to(dtype)"),
    ("_load_model", "", "model thread: other"),
    ("_open (indexer/decode", "", "decode: Pillow decode (_open)"),
    ("_shrink (indexer", "", "decode: box-reduce"),
    ("to_rgb", "", "decode: to_rgb"),
    ("exif_transpose", "", "decode: exif_transpose"),
    ("model_input", "", "decode: resize + crop"),
    ("_prepare (indexer", "", "decode worker: read + hash + other"),
    ("encode_image", "", "embed: encode_image"),
    ("_embed (indexer", "", "embed: waiting for the model to load"),
    ("write_batch", "", "commit: catalog write"),
    ("vector_store", "", "faiss sync + save"),
    ("_prepared (indexer", "", "main: waiting for decoded images"),
    ("_find_and_load", "", "import (main thread)"),
    ("_worker (concurrent", "", "pool thread idle"),
)


def _stage_of(frames: list[str]) -> str:
    stack = ";".join(frames)
    for first, second, name in _STAGE_RULES:
        if first in stack and second in stack:
            return name
    return "other: " + (frames[-1].split(" (")[0] if frames else "?")


# ---------------------------------------------------------------------------------------------
# Report


def environment(paths: Paths) -> dict:
    import open_clip
    import PIL
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    peer_versions = subprocess.run(
        [
            paths.peer / "venv" / "bin" / "python",
            "-c",
            "import importlib.metadata as m; print(m.version('rclip'), m.version('onnxruntime'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "pillow": PIL.__version__,
        "rclip": peer_versions[0] if peer_versions else "?",
        "onnxruntime (rclip)": peer_versions[1] if len(peer_versions) > 1 else "?",
        "photoseek_git": rev + ("+dirty" if dirty else ""),
    }


def code_fingerprint() -> str:
    """A hash of photoseek's sources and data: to notice edits made while the benchmark runs."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for folder in ("indexer", "search", "data"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def target_bound(result: dict) -> dict:
    """What the 5x target asks against what this machine can give on this folder, from this run.

    Two upper bounds on any indexer's images/s, both generous: decoding alone on every core (as
    if embedding and start-up were free), and all CPU work shared perfectly over the cores with
    no start-up at all: one-thread decode time plus the image tower at the bf16 matmul ceiling.
    """
    fresh, decode, model = result["fresh_index"], result["decode"], result["model"]
    photos, cores = fresh["photos"], result["environment"]["cpus"]
    target = 5 * fresh["rclip"]["images_per_s"]
    decode_cpu_s = photos / decode["photoseek_decode_1_thread"]["images_per_s"]
    model_cpu_s = photos / model["bf16_matmul"]["ceiling_images_per_s"] * model["torch_threads"]
    return {
        "target_images_per_s": target,
        "decode_alone_all_cores_images_per_s": decode["photoseek_decode_2_threads"]["images_per_s"],
        "decode_plus_model_at_ceiling_images_per_s": photos * cores / (decode_cpu_s + model_cpu_s),
    }


def markdown(result: dict) -> str:
    env, fresh = result["environment"], result["fresh_index"]
    ours, theirs = fresh["photoseek"], fresh["rclip"]
    runs = len(ours["runs"])
    lines = [
        f"`{result['command']}` — {env['cpu']}, {env['cpus']} CPUs, torch {env['torch']}, "
        f"rclip {env['rclip']} (onnxruntime {env['onnxruntime (rclip)']}); random weights.",
        "",
        f"| Fresh index of {fresh['photos']} photos (1-24 MP), median of {runs} | photoseek "
        f"| rclip | photoseek / rclip |",
        "|---|---:|---:|---:|",
        f"| wall time, new process | {ours['wall_s_median']:.2f} s "
        f"| {theirs['wall_s_median']:.2f} s "
        f"| {fresh['ratio_wall_photoseek_over_rclip']:.2f}x |",
        f"| images/s | {ours['images_per_s']:.2f} | {theirs['images_per_s']:.2f} "
        f"| {fresh['ratio_images_per_s_photoseek_over_rclip']:.2f}x |",
        f"| peak RSS | {ours['peak_rss_mb_median']:.0f} MB | {theirs['peak_rss_mb_median']:.0f} MB "
        f"| {ours['peak_rss_mb_median'] / theirs['peak_rss_mb_median']:.2f}x |",
        f"| CPU time (user+sys) | {ours['cpu_s_median']:.1f} s | {theirs['cpu_s_median']:.1f} s "
        f"| {ours['cpu_s_median'] / theirs['cpu_s_median']:.2f}x |",
        f"| CPU used by other processes meanwhile (shared machine) "
        f"| {ours['others_cpu_s_median']:.1f} s | {theirs['others_cpu_s_median']:.1f} s | |",
        f"| photoseek's own `seconds` (inside `run_index`) | {ours['own_seconds_median']:.2f} s "
        "| | |",
        f"| photoseek outside `run_index` (interpreter start, CLI, exit) "
        f"| {ours['wall_s_median'] - ours['own_seconds_median']:.2f} s | | |",
        f"| rclip search alone (`-n`, part of each rclip run) | "
        f"| {theirs['search_only_wall_s']:.2f} s | |",
        f"| first run (photoseek exports its ONNX query towers once per model) "
        f"| {ours['first_run_cold_tower_cache']['wall_s']:.2f} s "
        f"| {theirs['first_run']['wall_s']:.2f} s | |",
    ]
    decode, model = result.get("decode"), result.get("model")
    if decode or model:
        lines += ["", "| Stage alone (one process) | images/s |", "|---|---:|"]
    if decode:
        for key, label in (
            ("photoseek_decode_1_thread", "photoseek decode to 256 px, 1 thread"),
            ("photoseek_decode_2_threads", "photoseek decode to 256 px, 2 threads"),
            ("pillow_full_decode_1_thread", "Pillow full decode (`convert('RGB')`), 1 thread"),
        ):
            lines.append(f"| {label} | {decode[key]['images_per_s']:.1f} |")
    if model:
        f = model["flops"]
        mm = model["bf16_matmul"]
        lines += [
            f"| {ARCH} image tower, batch {BATCH}, fp32 | {model['fp32']['images_per_s']:.1f} |",
            f"| {ARCH} image tower, batch {BATCH}, bf16 | {model['bf16']['images_per_s']:.1f} |",
            f"| bf16 matmul ceiling (best block GEMM {mm['bf16_gflop_per_s']:.0f} GFLOP/s "
            f"/ {f['gflops']:.1f} GFLOP per image) | {mm['ceiling_images_per_s']:.1f} |",
            f"| bf16 tower: {model['bf16']['gflop_per_s']:.0f} GFLOP/s = "
            f"{100 * model['bf16_fraction_of_matmul_ceiling']:.0f}% of that ceiling "
            f"({100 * model['bf16_fraction_of_layer_gemm_ceiling']:.0f}% of its own GEMMs' "
            f"{mm['bf16_layer_gemms_gflop_per_s']:.0f} GFLOP/s) | |",
        ]
    bound = result.get("target_bound")
    if bound:
        rclip = theirs["images_per_s"]
        lines += [
            "",
            "| The 5x target against this machine's bounds | images/s | x rclip |",
            "|---|---:|---:|",
            f"| 5x rclip | {bound['target_images_per_s']:.1f} | 5.00x |",
            f"| bound: decoding alone on all {env['cpus']} cores (embedding and start-up free) "
            f"| {bound['decode_alone_all_cores_images_per_s']:.1f} "
            f"| {bound['decode_alone_all_cores_images_per_s'] / rclip:.2f}x |",
            "| bound: decode + image tower at the bf16 matmul ceiling, perfectly shared over the "
            f"cores, no start-up | {bound['decode_plus_model_at_ceiling_images_per_s']:.1f} "
            f"| {bound['decode_plus_model_at_ceiling_images_per_s'] / rclip:.2f}x |",
            f"| photoseek, measured | {ours['images_per_s']:.1f} "
            f"| {fresh['ratio_images_per_s_photoseek_over_rclip']:.2f}x |",
        ]
    gate = env.get("quiet_gate")
    if gate and gate["max_wait_s"] > 0:
        lines += [
            "",
            f"Shared machine: each timed sample waited (up to {gate['max_wait_s']:.0f} s) for "
            f"other "
            f"processes to use < {gate['threshold_cores']} cores; "
            f"{gate['samples_started_while_busy']} sample(s) started while they were busy.",
        ]
    reindex = result.get("reindex")
    if reindex:
        verdict = "meets" if reindex["meets_target"] else "MISSES"
        lines += [
            "",
            f"Re-index of an unchanged {reindex['images']:,}-image collection "
            f"(`photoseek index --index DIR`, median of {len(reindex['runs'])}): "
            f"**{reindex['wall_s_median']:.2f} s** wall ({reindex['own_seconds_median']:.2f} s "
            f"inside `run_index`), peak RSS {reindex['peak_rss_mb_median']:.0f} MB — "
            f"{verdict} the ≤ {reindex['target_wall_s']:.0f} s target.",
        ]
    return "\n".join(lines)


def print_stages(result: dict) -> None:
    stages = result.get("stage_breakdown")
    if stages:
        _say(f"\nphotoseek stages run alone, in a fresh process ({stages['photos']} photos):")
        for name, seconds in stages["stages_s"].items():
            _say(f"  {seconds:7.2f} s  {name}")
    spy = result.get("py_spy")
    if spy:
        _say("\npy-spy, one real photoseek run, seconds per thread (wall, idle included):")
        for thread, stages_s in spy["seconds_by_thread"].items():
            _say(f"  [{thread}]")
            for name, seconds in list(stages_s.items())[:8]:
                _say(f"    {seconds:7.2f} s  {name}")


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--quick", action="store_true", help="1 run each, no 10k part")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="photos, peer, models")
    parser.add_argument("--out", type=Path, default=OUT_FILE, help="where the JSON goes")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="before each timed sample, wait up to S seconds for other processes to go idle "
        "(0: don't wait)",
    )
    parser.add_argument("--py-spy", metavar="BIN", help="also sample one photoseek run with py-spy")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.quick:
        args.runs = 1
    return args


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    paths = Paths(args.cache.expanduser().resolve())
    paths.scratch.mkdir(parents=True, exist_ok=True)
    photos = ensure_photos(paths)
    ensure_peer(paths)
    ensure_checkpoint(paths.checkpoint, ARCH)
    python = Path(sys.executable)
    if python.is_relative_to(REPO):
        python = python.relative_to(REPO)
    command = _shell([python, "bench/index_bench.py", *argv])
    result: dict = {"command": command, "environment": environment(paths)}
    fingerprint = code_fingerprint()

    _say(f"\n1. fresh index of {len(photos)} photos, {args.runs} run(s) each, alternating")
    gate = QuietGate(args.quiet_wait)
    result["fresh_index"] = bench_fresh(paths, photos, args.runs, gate)
    _say("\n2a. decode only")
    result["decode"] = bench_decode(photos, args.runs, gate)
    _say("\n2b. model only")
    result["model"] = bench_model(args.runs, gate)
    result["target_bound"] = target_bound(result)
    if not args.quick:
        _say(f"\n3. re-index of an unchanged {REINDEX_COUNT:,}-image collection")
        result["reindex"] = bench_reindex(paths, args.runs, gate)
    if result["fresh_index"]["ratio_images_per_s_photoseek_over_rclip"] < 5:
        _say("\n4. photoseek is below 5x rclip's images/s: stage breakdown")
        gate()
        result["stage_breakdown"] = stage_breakdown(paths)
        if args.py_spy:
            gate()
            result["py_spy"] = py_spy_profile(paths, args.py_spy)
    result["environment"]["loadavg_at_end"] = os.getloadavg()
    result["environment"]["quiet_gate"] = gate.report()
    result["environment"]["code_fingerprint"] = fingerprint
    result["code_changed_during_run"] = code_fingerprint() != fingerprint
    result["markdown"] = markdown(result)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_stages(result)
    _say(f"\nwrote {args.out}\n\n{result['markdown']}")
    if result["code_changed_during_run"]:
        _say("\nWARNING: photoseek's sources changed while this ran; the numbers mix versions.")
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == [STAGES_FLAG]:
        _stage_child(*sys.argv[2:4])
        sys.exit(0)
    sys.path.insert(0, str(REPO))
    try:
        main(sys.argv[1:])
    except BenchError as e:
        sys.stderr.write(f"index_bench: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("index_bench: interrupted\n")
        sys.exit(130)
