"""Where in a photo a text matches: Grad-CAM maps of the ITM head, per text and per word.

`explain` runs the head of a model folder on (photo, text) and returns an `Explanation`: one
map over the image tower's patch grid per BPE token (`search.tools.gradcam` says how they are
computed), a word's map is the mean over its tokens, and the text's map the mean over all
its words' tokens (as ALBEF grounds a phrase). The model sees the photo as the index does:
upright after its EXIF orientation, shortest side resized to the tower's input and centre-
cropped (or, for a squash model, the whole photo resized to the square), so the maps cover
that square (`PhotoGeometry.crop`) and a peak is a grid cell's centre mapped back into the
upright photo's pixels.

An index folder holds only the ONNX towers, which carry no gradients, so explaining needs the
torch model: a model folder with an ITM head, named directly or through the index's record.

A BLIP reranker (`--reranker hf:ORG/NAME` or a folder) is explained the same way on its own
ITM cross-attention (`search.rerank.blip_explain`); its processor resizes the whole upright
photo to its square without cropping, so its maps cover the whole photo.
Importing this module does not import torch; `explain` and `explain_blip` do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import BadInput
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.models.model_files import HEAD_FILE

if TYPE_CHECKING:
    from indexer.models.loading import LoadedModel
    from search.rerank.blip import BlipScorer


@dataclass(frozen=True)
class PhotoGeometry:
    """The upright photo's size and the square of it the model saw (left, top, right, bottom)."""

    width: int
    height: int
    crop: tuple[float, float, float, float]

    @classmethod
    def seen_as(cls, width: int, height: int, resize: decoding.ImageInput) -> PhotoGeometry:
        """What a model resizing photos as `resize` says saw of a `width` x `height` photo:
        a squash model the whole photo, a cropping one its centre square."""
        if resize.resize_mode == "squash":
            return cls.whole(width, height)
        return cls.centre_square(width, height, resize.size)

    @classmethod
    def whole(cls, width: int, height: int) -> PhotoGeometry:
        return cls(width, height, (0.0, 0.0, float(width), float(height)))

    @classmethod
    def centre_square(cls, width: int, height: int, size: int) -> PhotoGeometry:
        """The square `decode.model_input` keeps of a `width` x `height` photo, in its pixels."""
        if width <= height:
            scale, new = width / size, (size, int(size * height / width))
        else:
            scale, new = height / size, (int(size * width / height), size)
        left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
        box = (left * scale, top * scale, (left + size) * scale, (top + size) * scale)
        return cls(width, height, box)

    def cell_centre(self, row: int, col: int, side: int) -> tuple[int, int]:
        """Pixel (x, y) of the photo at the centre of cell (row, col) of a `side` grid."""
        left, top, right, bottom = self.crop
        x = left + (col + 0.5) * (right - left) / side
        y = top + (row + 0.5) * (bottom - top) / side
        return min(int(x), self.width - 1), min(int(y), self.height - 1)


@dataclass(frozen=True)
class Explanation:
    """Grad-CAM maps of one (photo, text) pair; see the module docstring."""

    text: str
    words: list[str]
    spans: list[range]  # each word's rows in `maps`
    maps: np.ndarray  # [rows, g, g]: per token, as `gradcam.TokenMaps.maps`
    itm_logit: float
    layer: int
    geometry: PhotoGeometry

    def map_of(self, word_indices: Sequence[int] | None = None) -> np.ndarray:
        """The map [g, g] of some words (indices into `words`; all when None), scaled to a
        maximum of 1 (all zeros where nothing there raises the match)."""
        chosen = range(len(self.words)) if word_indices is None else word_indices
        rows = [row for i in chosen for row in self.spans[i]]
        if not rows:
            raise BadInput("no words to map")
        grid = self.maps[rows].mean(axis=0)
        top = float(grid.max())
        return (grid / top if top > 0 else np.zeros_like(grid)).astype(np.float32)

    def peak(self, grid: np.ndarray) -> tuple[int, int]:
        """Pixel (x, y) in the upright photo of a map's highest cell (the first, on ties)."""
        row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
        return self.geometry.cell_centre(int(row), int(col), grid.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (`photoseek explain --json`)."""
        whole = self.map_of()
        g = self.geometry
        return {
            "text": self.text,
            "itm_logit": round(self.itm_logit, 6),
            "layer": self.layer,
            "width": g.width,
            "height": g.height,
            "crop": [round(v, 2) for v in g.crop],
            "peak": list(self.peak(whole)),
            "grid": _rounded(whole),
            "words": [
                {"word": word, "peak": list(self.peak(grid)), "grid": _rounded(grid)}
                for word, grid in ((w, self.map_of([i])) for i, w in enumerate(self.words))
            ],
        }


def _rounded(grid: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in grid]


def model_folder(index_dir: Path | None, model: str | None) -> str:
    """The --model value explaining uses: `model` itself, or the model the index at
    `index_dir` was built with when that is a local folder (explaining needs torch weights)."""
    if model is not None:
        if index_dir is not None:
            raise BadInput("give --index or --model, not both")
        return model
    from indexer.locations import index_dir as default_index
    from indexer.models.loading import ModelSpec
    from indexer.store.index_dir import model_record, open_existing

    catalog = open_existing(default_index(index_dir))
    try:
        record = model_record(catalog)
    finally:
        catalog.close()
    if record is None:
        raise BadInput("this index records no model yet; pass --model DIR")
    spec = ModelSpec.parse(record.identity.spec) if record.identity.spec else None
    if spec is None or spec.kind != "local-dir" or not Path(spec.name).is_dir():
        raise BadInput(
            f"the index's model {record.identity.spec} is not a local model folder; "
            "pass --model DIR (a folder with an ITM head)"
        )
    return spec.name


def load_explainer(model: str) -> LoadedModel:
    """The torch model and ITM head of a model folder (--model value), in fp32."""
    from indexer.models.loading import ModelSpec, load_model

    spec = ModelSpec.parse(model)
    if spec.kind != "local-dir" or not (Path(spec.name) / HEAD_FILE).is_file():
        raise BadInput(f"the model {model} has no ITM head to explain with (train one first)")
    return load_model(spec, precision="fp32")


def read_photo(path: Path) -> tuple[bytes, str]:
    """A photo's bytes and lower-case extension, read with the indexer's limits."""
    ext = extension(bytes(path))
    try:
        return decoding.read_image(path, ext), ext
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from None


def explain(loaded: LoadedModel, data: bytes, ext: str, text: str, layer: int) -> Explanation:
    """Maps of where `text` matches the photo in `data` (a file's bytes, its extension)."""
    from search.tools.gradcam import token_maps, word_tokens

    ids, words, spans = word_tokens(loaded.tokenizer, text)
    resize = loaded.image_input  # cropped or squashed, as the model was indexed
    decoded = decoding.decode(data, ext, resize)
    result = token_maps(loaded, decoded.pixels, ids, layer)
    geometry = PhotoGeometry.seen_as(decoded.info.width, decoded.info.height, resize)
    return Explanation(text, words, spans, result.maps, result.itm_logit, result.layer, geometry)


def load_blip_explainer(spec: str) -> BlipScorer:
    """The BLIP scorer a `--reranker` value names (`hf:ORG/NAME` or a folder), for
    `explain_blip`; other kinds of reranker cannot be explained."""
    from search.rerank.hf_loading import load, resolve

    checkpoint = resolve(spec)
    if checkpoint.model_type != "blip":
        raise BadInput(
            f"--reranker {spec}: explain knows the photoseek head and BLIP, "
            f"not {checkpoint.model_type}"
        )
    scorer: BlipScorer = load(checkpoint)
    return scorer


def explain_blip(
    scorer: BlipScorer, data: bytes, ext: str, text: str, layer: int | None = None
) -> Explanation:
    """Maps of where `text` matches the photo in `data` by a BLIP ITM model (`layer`: one of
    its text encoder's layers; None: `blip_explain.default_layer`)."""
    from search.rerank.blip_explain import blip_maps

    # Decoded at full size: the upright photo's own pixels are where the peaks are given.
    image = decoding.load_rgb(data, ext)
    result = blip_maps(scorer, image, text, layer)
    # The processor squashes the photo to its square, so the map covers the whole photo.
    geometry = PhotoGeometry.whole(*image.size)
    return Explanation(
        text, result.words, result.spans, result.maps, result.itm_logit, result.layer, geometry
    )


def explain_photo(
    data: bytes,
    ext: str,
    text: str,
    index_dir: Path | None = None,
    model: str | None = None,
    reranker: str | None = None,
    layer: int | None = None,
) -> Explanation:
    """`explain` or `explain_blip` as `photoseek explain`'s options choose: `reranker` None or
    "head" explains the head of `model_folder(index_dir, model)`, anything else a BLIP model."""
    return explainer(index_dir, model, reranker)(data, ext, text, layer)


Explainer = Callable[[bytes, str, str, "int | None"], Explanation]


def explainer(
    index_dir: Path | None = None, model: str | None = None, reranker: str | None = None
) -> Explainer:
    """A loaded model's explain function (data, ext, text, layer), for explaining many photos
    (`search --html --explain`): the choice of `explain_photo`, loaded once."""
    if reranker not in (None, "head"):
        if model is not None:
            raise BadInput("give --model or a BLIP --reranker, not both")
        scorer = load_blip_explainer(reranker)
        return lambda data, ext, text, layer: explain_blip(scorer, data, ext, text, layer)
    from search.tools.gradcam import DEFAULT_LAYER

    loaded = load_explainer(model_folder(index_dir, model))

    def run(data: bytes, ext: str, text: str, layer: int | None) -> Explanation:
        return explain(loaded, data, ext, text, DEFAULT_LAYER if layer is None else layer)

    return run
