"""The torch-free tower format: what `towers.json` records about an index's ONNX encoders."""

from __future__ import annotations

import json
import math
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
# 2: square image size; 3: text_trimmed; 4: text tokens and the ITM head; 5: Platt calibrates
# the fused score (it calibrated the ITM logit alone); 6: Hugging Face tokenizers and the score
FORMAT_VERSION = 6
TOKENIZER_FILE = "tokenizer.json"
CLEANERS = ("lower", "whitespace", "canonicalize")  # open_clip's text cleaning functions
NO_CLEANING = "none"  # a transformers model's tokenizer: its own normaliser is all there is
# indexer.media.decode's resizes, spelled out here: a cold text query never imports Pillow.
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")
CROP_OFFSETS = ("round", "floor")


@dataclass(frozen=True)
class ImagePreprocess:
    """How the image tower wants its pixels: open_clip's eval transform, written as data.

    Query images are resized as ``size``, ``resize_mode``, ``interpolation`` and
    ``crop_offset`` say (by ``indexer.media.decode.model_input``, as the index's photos were),
    then standardised with ``mean`` and ``std``; the export only accepts a transform that
    function implements.
    """

    size: int  # square side S of the [S, S, 3] pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    fill_color: int
    crop_offset: str = "round"  # "floor" for a transformers model's processor


@dataclass(frozen=True)
class RerankSpec:
    """The model's ITM head, exported beside the towers, and what the fused score needs."""

    head_file: str
    alpha: float  # fused = itm_logit + alpha * logit_scale * itc_cosine
    logit_scale: float
    platt: tuple[float, float]  # match probability = sigmoid(platt[0] * fused + platt[1])
    stored_tokens: int  # each image's stored tokens: [stored_tokens, store_dim] fp16
    store_dim: int


@dataclass(frozen=True)
class HfTokenizerSpec:
    """A Hugging Face tokenizer, saved as `file` (tokenizer.json) and run by the `tokenizers`
    library as open_clip's HFTokenizer runs it: cleaned, special tokens added, truncated and
    padded to the context length."""

    file: str
    clean: str  # one of CLEANERS (or NO_CLEANING), applied before tokenizing
    pad_id: int
    pad_token: str
    padding_side: str  # "right" or "left"
    truncation_side: str
    strip_id: int | None = None  # an id replaced by 0 (open_clip's strip_sep_token), if any


@dataclass(frozen=True)
class ScoreSpec:
    """How the model scores a text against an image: CLIP's softmax over cosines, or SigLIP's
    sigmoid, where sigmoid(logit_scale * cosine + logit_bias) is a match probability."""

    kind: str = "cosine"  # "cosine" or "sigmoid"
    logit_scale: float = 1.0
    logit_bias: float = 0.0

    def probability(self, cosine: float) -> float:
        """The sigmoid model's match probability for a text-image cosine."""
        logit = self.logit_scale * cosine + self.logit_bias
        # Split by sign so exp never overflows for a large |logit|.
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        odds = math.exp(logit)
        return odds / (1.0 + odds)


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
    vocab_file: str = VOCAB_FILE  # CLIP's BPE vocabulary, used unless `tokenizer` is set
    tokenizer: HfTokenizerSpec | None = None  # the model's Hugging Face tokenizer, if it has one
    score: ScoreSpec = ScoreSpec()
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
            tokenizer = raw.pop("tokenizer", None)
            if tokenizer is not None:
                tokenizer = HfTokenizerSpec(**tokenizer)
            score = ScoreSpec(**raw.pop("score", {}))
            spec = cls(**raw, image=ImagePreprocess(**image), rerank=rerank,
                       tokenizer=tokenizer, score=score)  # fmt: skip
        except (KeyError, TypeError) as e:
            raise IndexNotFound(f"{path}: malformed ({e})") from None
        spec._check_names(path)
        spec._check_choices(path)
        return spec

    def _check_choices(self, path: Path) -> None:
        """Refuse settings the query path does not know, naming the one that is wrong."""
        choices: list[tuple[str, object, tuple[str, ...]]] = [
            ("score kind", self.score.kind, ("cosine", "sigmoid")),
            ("image resize_mode", self.image.resize_mode, RESIZE_MODES),
            ("image interpolation", self.image.interpolation, INTERPOLATIONS),
            ("image crop_offset", self.image.crop_offset, CROP_OFFSETS),
        ]
        if self.tokenizer is not None:
            sides = ("right", "left")
            choices += [
                ("tokenizer clean", self.tokenizer.clean, (*CLEANERS, NO_CLEANING)),
                ("tokenizer padding_side", self.tokenizer.padding_side, sides),
                ("tokenizer truncation_side", self.tokenizer.truncation_side, sides),
            ]
        for what, value, allowed in choices:
            if value not in allowed:
                raise IndexNotFound(f"{path}: {what} {value!r} is not one of {', '.join(allowed)}")

    def named_files(self) -> dict[str, str]:
        """The files this export uses beside towers.json (each graph also has its .data),
        by the field that names them."""
        names = {"text_file": self.text_file, "image_file": self.image_file}
        if self.tokenizer is None:  # CLIP's BPE; a Hugging Face tokenizer replaces it
            names["vocab_file"] = self.vocab_file
        else:
            names["tokenizer_file"] = self.tokenizer.file
        if self.rerank is not None:
            names["head_file"] = self.rerank.head_file
        return names

    def _check_names(self, path: Path) -> None:
        """Refuse file names that leave the export folder: towers.json comes with an index
        folder, which may come from anyone, and its names are joined to the folder's path."""
        names = {**self.named_files(), "vocab_file": self.vocab_file}
        for field, name in names.items():
            if not plain_name(name):
                raise IndexNotFound(
                    f"{path}: {field} {name!r} is not a plain file name in its folder"
                )


def plain_name(name: object) -> bool:
    """Whether `name` is one path component naming a file beside towers.json."""
    if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name:
        return False
    return not any(sep in name for sep in ("/", "\\")) and not Path(name).is_absolute()


def towers_ready(folder: Path) -> bool:
    """Whether `folder` holds a complete export in the current format."""
    try:
        TowersSpec.read(folder)
    except (IndexNotFound, ModelMismatch):
        return False
    return True
