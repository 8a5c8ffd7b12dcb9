"""Rebuild the demo's shipped model (`data/demo-model/`) with the demo's own recipe.

    .venv/bin/python bench/demo_model.py --out data/demo-model [--work DIR]

Trains the demo's model from scratch exactly as `photoseek demo --retrain` does (fixed seed,
the default `DemoSize`), rounds it to fp16 into OUT, measures the rounded copy on the demo
gallery and writes OUT/manifest.json: each file's sha256, the recipe, this command, the CPU and
the figures (with the pointing game of `bench/explain_bench.py` on the demo gallery). The
training folder WORK (default: a folder under the user cache) is reused, so a
second run only re-exports and re-measures.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import asdict
from pathlib import Path

from explain_bench import pointing_game
from lib.machine import cpu_model

from indexer.datasets.shapes_world import read_test
from indexer.locations import cache_dir
from indexer.models.model_files import write_half_copy
from indexer.models.precision import resolve_precision
from indexer.training.pairs import read_pairs
from search.demo.run import DemoSize, gallery_quality, run_demo
from search.demo.shipped import write_manifest
from search.tools.explain import load_explainer
from search.tools.gradcam import DEFAULT_LAYER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the shipped model folder")
    parser.add_argument("--work", type=Path, default=cache_dir() / "demo-model-build")
    args = parser.parse_args()

    size = DemoSize()
    report = run_demo(args.work, lambda line: print(line, file=sys.stderr), retrain=True)
    assert report.model is not None
    write_half_copy(report.model, args.out)
    data = args.work / f"shapes-{size.tag}"
    quality = gallery_quality(args.out, read_pairs(data / "test.jsonl"))
    game = pointing_game(
        load_explainer(str(args.out)), data, read_test(data / "test.jsonl"), DEFAULT_LAYER
    )
    explain = {"pointing_game": round(game.score, 4), "chance": round(game.chance, 4),
               "layer": DEFAULT_LAYER}  # fmt: skip
    cpu = f"{cpu_model()} ({platform.machine()}, {resolve_precision('auto', 'cpu')} training)"
    manifest = write_manifest(args.out, quality, asdict(size), cpu, explain)
    print(f"trained fp32: {report.quality}")
    print(f"shipped fp16: {manifest.quality}, pointing game {manifest.explain}")
    for name, digest in manifest.files.items():
        size_mb = (args.out / name).stat().st_size / 1e6
        print(f"  {name}  {size_mb:.2f} MB  sha256 {digest}")


if __name__ == "__main__":
    main()
