"""The torch-free tower format: what `towers.json` records about an index's ONNX encoders."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from indexer.errors import IndexNotFound, ModelMismatch

TOWERS_FILE = "towers.json"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
TEXT_INPUT = "tokens"
IMAGE_INPUT = "pixels"
OUTPUT = "embedding"
TOKENS_OUTPUT = "token_features"  # a trimmed text tower's per-token features, the ITM head's input
HEAD_INPUTS = ("text_tokens", "text_mask", "image_tokens", "image_index")
LOGIT_OUTPUT = "logit"
FORMAT_VERSION = 4  # 2: square image size; 3: text_trimmed; 4: text tokens and the ITM head


@dataclass(frozen=True)
class ImagePreprocess:
    """How the image tower wants its pixels: open_clip's eval transform, written as data.

    Queries use ``size``, ``mean`` and ``std``; the rest records the model's transform, which
    the export only accepts when it is what ``indexer.decode.model_input`` does.
    """

    size: int  # square side S of the [S, S, 3] pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    fill_color: int


@dataclass(frozen=True)
class RerankSpec:
    """The model's ITM head, exported beside the towers, and what the fused score needs."""

    head_file: str
    alpha: float  # fused = itm_logit + alpha * logit_scale * itc_cosine
    logit_scale: float
    platt: tuple[float, float]  # match probability = sigmoid(platt[0] * logit + platt[1])
    stored_tokens: int  # each image's stored tokens: [stored_tokens, store_dim] fp16
    store_dim: int


@dataclass(frozen=True)
class TowersSpec:
    """What a query needs to know about exported towers; stored as towers.json beside them."""

    context_length: int
    embed_dim: int
    image: ImagePreprocess
    text_file: str  # graph files; each keeps its weights beside it in <name>.data
    image_file: str
    text_trimmed: bool  # the text tower takes [B, L ≤ context_length]: padding may be cut
    rerank: RerankSpec | None = None  # set when the model has an ITM head
    vocab_file: str = VOCAB_FILE
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The spec as the JSON text written to towers.json."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> TowersSpec:
        """Load towers.json from an export folder."""
        path = Path(folder) / TOWERS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexNotFound(f"{path}: no exported ONNX towers here") from None
        except (OSError, ValueError) as e:
            raise IndexNotFound(f"{path}: unreadable ({e})") from None
        if not isinstance(raw, dict):
            raise IndexNotFound(f"{path}: malformed (not a JSON object)")
        if raw.get("version") != FORMAT_VERSION:
            raise ModelMismatch(
                f"{path}: towers format {raw.get('version')!r}, expected {FORMAT_VERSION}; "
                "re-export the towers"
            )
        try:
            image = raw.pop("image")
            for key in ("mean", "std"):
                image[key] = tuple(image[key])
            rerank = raw.pop("rerank", None)
            if rerank is not None:
                rerank = RerankSpec(**{**rerank, "platt": tuple(rerank["platt"])})
            return cls(**raw, image=ImagePreprocess(**image), rerank=rerank)
        except (KeyError, TypeError) as e:
            raise IndexNotFound(f"{path}: malformed ({e})") from None


def towers_ready(folder: Path) -> bool:
    """Whether `folder` holds a complete export in the current format."""
    try:
        TowersSpec.read(folder)
    except (IndexNotFound, ModelMismatch):
        return False
    return True
