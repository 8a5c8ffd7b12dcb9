"""The rerankers photoseek knows, as data, and opening one for an index by its `--reranker` spec.

What a pretrained reranker keeps in the index folder lies under `rerank/`: its calibration
(`<fingerprint>.json`, written by `photoseek calibrate`) and its vision cache
(`vision/<fingerprint>/`, or `vision/<fingerprint>-bf16/` for states computed in bf16), both
keyed by the checkpoint's content fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from indexer import atomic
from search.rerank.cross_encoder import CrossEncoderReranker
from search.rerank.fusion import Fusion
from search.rerank.hf_loading import Checkpoint, load, resolve
from search.rerank.photoseek_model import PhotoseekScorer, is_model_folder, resolve_folder
from search.rerank.vision_cache import VisionCache

RERANK_DIR = "rerank"


@dataclass(frozen=True)
class RerankerKind:
    """One kind of reranker: its spec or model_type, the class that runs it, example names."""

    kind: str
    runs: str
    examples: tuple[str, ...]
    caches_images: bool


KINDS = (
    RerankerKind("head", "the index model's own ITM head (ONNX, no torch)", (), False),
    RerankerKind("blip", "BlipForImageTextRetrieval (ITM head)",
                 ("Salesforce/blip-itm-base-coco", "Salesforce/blip-itm-large-coco"), True),
    RerankerKind("vilt", "ViltForImageAndTextRetrieval",
                 ("dandelin/vilt-b32-finetuned-coco",), False),
    RerankerKind("bridgetower", "BridgeTowerForImageAndTextRetrieval",
                 ("BridgeTower/bridgetower-large-itm-mlm-itc",), False),
    RerankerKind("flava", "FlavaModel + its ITM head", ("facebook/flava-full",), False),
    RerankerKind("photoseek", "a photoseek model folder's ITM head on its own towers (torch)",
                 (), False),
)  # fmt: skip


def list_rerankers() -> list[RerankerKind]:
    return list(KINDS)


def is_head(spec: str | None) -> bool:
    return spec is None or spec == "head"


@dataclass(frozen=True)
class Opened:
    """A pretrained reranker opened for one index."""

    checkpoint: Checkpoint
    reranker: CrossEncoderReranker


def open_reranker(spec: str, index_dir: Path, cache_bytes: int | None = None) -> Opened:
    """The pretrained reranker `spec` names, with this index's calibration and vision cache."""
    if is_model_folder(spec):  # a photoseek model's head reads the files through its towers
        checkpoint = resolve_folder(spec)
        scorer = PhotoseekScorer(checkpoint.folder)
    else:
        checkpoint = resolve(spec)
        scorer = load(checkpoint)
    cache = VisionCache(
        index_dir / RERANK_DIR / "vision" / vision_key(checkpoint, scorer), cache_bytes
    )
    fusion = read_fusion(index_dir, checkpoint.fingerprint)
    return Opened(checkpoint, CrossEncoderReranker(scorer, fusion, cache))


def vision_key(checkpoint: Checkpoint, scorer: object) -> str:
    """The vision cache's folder name: the checkpoint, and the precision its image side ran in
    when not fp32 (bf16 states differ from fp32 ones in their last bits)."""
    precision = getattr(scorer, "precision", "fp32")
    return (
        checkpoint.fingerprint if precision == "fp32" else f"{checkpoint.fingerprint}-{precision}"
    )


def read_fusion(index_dir: Path, fingerprint: str) -> Fusion:
    """The calibration `photoseek calibrate` stored for this reranker, else uncalibrated."""
    try:
        data = json.loads((index_dir / RERANK_DIR / f"{fingerprint}.json").read_text())
        return Fusion(float(data["alpha"]), float(data["logit_scale"]), tuple(data["platt"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Fusion()


def write_fusion(index_dir: Path, checkpoint: Checkpoint, fusion: Fusion, pairs: int) -> Path:
    path = index_dir / RERANK_DIR / f"{checkpoint.fingerprint}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**asdict(fusion), "reranker": checkpoint.spec, "pairs": pairs}
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    return path
