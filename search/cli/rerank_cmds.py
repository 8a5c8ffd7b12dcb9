"""`photoseek rerankers` and `photoseek calibrate`: the rerankers photoseek knows, and fitting a
pretrained one's alpha and Platt scaling on held-out pairs for an index."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from search.cli.options import IndexOpt, JsonOpt
from search.cli.output import print_json


def register(app: typer.Typer) -> None:
    app.command("rerankers")(rerankers)
    app.command("calibrate")(calibrate)


def rerankers(json_out: JsonOpt = False) -> None:
    """List the kinds of reranker `search --rerank --reranker SPEC` can use."""
    from dataclasses import asdict

    from search.rerank.kinds import list_rerankers

    kinds = list_rerankers()
    if json_out:
        print_json([asdict(kind) for kind in kinds])
        return
    for kind in kinds:
        spec = "head" if kind.kind == "head" else f"{kind.kind} (hf:ORG/NAME or a folder)"
        cache = ", vision cache" if kind.caches_images else ""
        examples = "".join(f"\n    hf:{name}" for name in kind.examples)
        sys.stdout.write(f"{spec}: {kind.runs}{cache}{examples}\n")


def calibrate(
    pairs: Annotated[Path, typer.Option(help="Held-out pairs (the `train` JSONL/CSV format)")],
    reranker: Annotated[str, typer.Option(help="hf:ORG/NAME or a save_pretrained folder")],
    index_dir: IndexOpt = None,
    rerank_k: Annotated[int, typer.Option(help="Candidates per caption (ITC top)")] = 32,
    json_out: JsonOpt = False,
) -> None:
    """Fit alpha and Platt scaling for a pretrained reranker; store them with the index."""
    from indexer.locations import index_dir as resolve_index
    from search.cli.output import fail
    from search.rerank.calibrate import calibrate as fit

    if reranker == "head":
        raise fail("the head is calibrated by `photoseek train`; name a pretrained reranker")
    done = fit(resolve_index(index_dir), reranker, pairs, rerank_k)
    result = {
        "alpha": done.fusion.alpha, "logit_scale": done.fusion.logit_scale,
        "platt": list(done.fusion.platt or ()), "pairs": done.pairs,
        "recall_at_1": done.recall_at_1, "stored": str(done.path),
    }  # fmt: skip
    if json_out:
        print_json(result)
    else:
        sys.stdout.write(
            f"alpha {done.fusion.alpha:g}, R@1 {done.recall_at_1:.3f} on {done.pairs} pairs; "
            f"stored in {done.path}\n"
        )


def fill_cache(directory: Path, spec: str, quiet: bool) -> None:
    """`index --rerank-cache`: fill the vision cache and report it on stderr."""
    from search.rerank.prefill import fill_vision_cache

    done = fill_vision_cache(directory, spec)
    if not quiet:
        sys.stderr.write(
            f"rerank cache: {done.computed} computed, {done.cached} already cached, "
            f"{done.unreadable} unreadable; {done.bytes_per_image} bytes per image, "
            f"{done.bytes_used} in all\n"
        )
