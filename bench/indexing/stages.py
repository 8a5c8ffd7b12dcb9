"""Part 4: where photoseek's time goes, as serial stages in a fresh process and by py-spy.

The stage breakdown runs in a child started as `index_bench.py --stage-breakdown-child`, so that
its first stages time the imports of torch, open_clip and photoseek in a process without them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lib import BENCH
from lib.cache import ARCH, Paths, image_files
from lib.peer import peer_env, photoseek_index_cmd
from lib.tables import say
from lib.timing import run_child

from indexing.model import BATCH

STAGES_FLAG = "--stage-breakdown-child"  # internal: run the stage breakdown in this process


def stage_breakdown(paths: Paths) -> dict:
    """Each indexing stage run alone, in order, in a fresh process (no overlap)."""
    script = BENCH / "index_bench.py"
    cmd = [sys.executable, script, STAGES_FLAG, paths.photos, paths.checkpoint]
    run = run_child(cmd, env=peer_env(paths), what="stage breakdown")
    return json.loads(run.stdout.strip().splitlines()[-1])


def stage_child(photo_dir: str, checkpoint: str) -> None:
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
        [*cmd, sys.executable, *photoseek_index_cmd(paths, index)],
        env=peer_env(paths),
        what="py-spy",
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


def print_stages(result: dict) -> None:
    """The stage breakdown and the py-spy summary, when the run made them."""
    stages = result.get("stage_breakdown")
    if stages:
        say(f"\nphotoseek stages run alone, in a fresh process ({stages['photos']} photos):")
        for name, seconds in stages["stages_s"].items():
            say(f"  {seconds:7.2f} s  {name}")
    spy = result.get("py_spy")
    if spy:
        say("\npy-spy, one real photoseek run, seconds per thread (wall, idle included):")
        for thread, stages_s in spy["seconds_by_thread"].items():
            say(f"  [{thread}]")
            for name, seconds in list(stages_s.items())[:8]:
                say(f"    {seconds:7.2f} s  {name}")
