"""What a Ray actor runs: photoseek's own decoder and embedder over batches of file paths.

Plain Python, no Ray import: Ray Data builds the class once per actor (loading the model once)
and calls it on each batch. Batches travel as columns of numpy arrays; a file that fails keeps
its row, with a zero vector and its reason, so the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from indexer.errors import UnreadableImage
from indexer.media import decode as decoding
from indexer.media.discovery import extension
from indexer.media.exif import PhotoInfo
from indexer.models.embedder import Embedder
from indexer.models.loading import ModelIdentity, ModelSpec
from indexer.towers.image_engine import open_image_embedder


@dataclass(frozen=True)
class WorkerModel:
    """The model the actors embed with, for the driver to check and record as a local run
    does with its own embedder."""

    identity: ModelIdentity
    dim: int
    image_size: int
    precision: str
    engine: str

    @classmethod
    def of(cls, embedder: Embedder) -> WorkerModel:
        return cls(
            embedder.identity,
            embedder.dim,
            embedder.image_size,
            embedder.precision,
            embedder.engine,
        )

    def to_json(self) -> str:
        facts = {"dim": self.dim, "image_size": self.image_size, "precision": self.precision}
        return json.dumps({**facts, "engine": self.engine, "identity": asdict(self.identity)})

    @classmethod
    def from_json(cls, text: str) -> WorkerModel:
        data = json.loads(text)
        identity = ModelIdentity(**data["identity"])
        return cls(identity, data["dim"], data["image_size"], data["precision"], data["engine"])


@dataclass(frozen=True)
class Embedded:
    """One file as an actor returns it: vector (and ITM tokens) and metadata, or its reason."""

    index: int  # into the list of files the driver handed out
    vector: np.ndarray | None
    tokens: np.ndarray | None
    info: PhotoInfo | None
    error: str | None


class EmbedFiles:
    """Ray Data's class UDF: loads the model once per actor, then reads, decodes and embeds
    each batch of paths (from a file system every node shares)."""

    def __init__(self, spec: ModelSpec, precision: str, device: str | None, image_size: int):
        self.embedder = open_image_embedder(spec, precision, device)
        self.image_size = image_size  # the driver's: what its index was built at
        # cropped or squashed as the model's own preprocess says, as a local run decodes
        self.resize = spec.image_input() or decoding.ImageInput(image_size)
        self.model = WorkerModel.of(self.embedder).to_json()
        # One blank image learns the ITM tokens' shape, so that a batch in which every file
        # failed still has every column, shaped as all the others.
        blank = np.zeros((1, image_size, image_size, 3), np.uint8)
        self.tokens = self.embedder.with_tokens(blank)[1]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [_decoded(bytes(path), self.resize) for path in batch["path"]]
        good = [i for i, (decoded, _) in enumerate(results) if decoded is not None]
        count = len(results)
        vectors = np.zeros((count, self.embedder.dim), np.float32)
        tokens = None
        if self.tokens is not None:
            tokens = np.zeros((count, *self.tokens.shape[1:]), self.tokens.dtype)
        if good:
            pixels = np.stack([d.pixels for i in good if (d := results[i][0]) is not None])
            vectors[good], good_tokens = self.embedder.with_tokens(pixels)
            if tokens is not None and good_tokens is not None:
                tokens[good] = good_tokens
        columns = {
            "index": batch["index"],
            "vector": vectors,
            "info": _strings(json.dumps(asdict(d.info)) if d else "" for d, _ in results),
            "error": _strings(error or "" for _, error in results),
            "model": _strings(self.model for _ in results),
        }
        return columns if tokens is None else {**columns, "tokens": tokens}


def unpack(batch: dict[str, np.ndarray]) -> tuple[WorkerModel, list[Embedded]]:
    """A batch as the driver gets it back: the model it was embedded with, and each file."""
    tokens = batch.get("tokens")
    files = []
    for row, index in enumerate(batch["index"]):
        error = str(batch["error"][row]) or None
        info = None if error else PhotoInfo(**json.loads(str(batch["info"][row])))
        vector = None if error else batch["vector"][row]
        row_tokens = None if error or tokens is None else tokens[row]
        files.append(Embedded(int(index), vector, row_tokens, info, error))
    return WorkerModel.from_json(str(batch["model"][0])), files


def _decoded(path: bytes, size: decoding.ImageInput) -> tuple[decoding.Decoded | None, str | None]:
    """The file decoded as `size` says, or why not, in the words a local run records."""
    ext = extension(path)
    try:
        return decoding.decode(decoding.read_image(path, ext), ext, size), None
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    except UnreadableImage as e:  # refused from its header, or from its pixels
        return None, str(e)


def _strings(values: Iterable[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)
