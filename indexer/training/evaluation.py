"""`photoseek eval`: retrieval quality of a trained model folder on a pair file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from indexer.errors import BadInput
from indexer.models.model_files import HEAD_FILE
from indexer.progress import Progress
from indexer.training.pairs import PairRow

RERANK_KS = (8, 16, 32)


def evaluate_pairs(
    model_dir: Path, rows: list[PairRow], progress: Callable[[Progress], None] | None = None
) -> dict[str, object]:
    """R@1/5/10 (fractions) for t2i and i2t, ITC alone and ITC+ITM at k = 8, 16, 32.

    Shape: {"itc": {"t2i": {"r1", "r5", "r10"}, "i2t": {...}}, "itm_k8": {...}, ...}; with
    "twin_accuracy" ({"itc": ..., "itm_k8": ...}) when every row has a twin group.
    """
    # Imported here, so that importing this module (the demo does) loads no torch.
    from indexer.training.metrics import evaluate
    from indexer.training.trained import load_trained

    if not (model_dir / HEAD_FILE).is_file():
        raise BadInput(f"{model_dir} is not a model folder written by `photoseek train`")
    trained = load_trained(model_dir)
    groups = [r.group for r in rows if r.group is not None]
    report = evaluate(
        trained,
        [(str(r.image), r.caption) for r in rows],
        twin_groups=groups if len(groups) == len(rows) else None,
        ks=RERANK_KS,
        progress=progress,
    )
    names = {"itc": "itc", **{f"rerank@{k}": f"itm_k{k}" for k in RERANK_KS}}
    out: dict[str, object] = {
        ours: {side: _fractions(report[side][theirs]) for side in ("t2i", "i2t")}
        for theirs, ours in names.items()
    }
    if report.get("twin_accuracy"):
        out["twin_accuracy"] = {
            ours: round(report["twin_accuracy"][theirs] / 100, 4) for theirs, ours in names.items()
        }
    out["images"], out["captions"], out["alpha"] = (
        report["images"], report["captions"], report["alpha"]
    )  # fmt: skip
    return out


def _fractions(recalls: dict[str, float]) -> dict[str, float]:
    """{"R@1": 12.5, ...} in percent → {"r1": 0.125, ...}."""
    return {key.replace("R@", "r"): round(value / 100, 4) for key, value in recalls.items()}
