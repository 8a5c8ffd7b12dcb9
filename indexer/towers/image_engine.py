"""The image tower on ONNX Runtime in int8: the indexer's engine on CPUs (`--precision auto`).

Without bf16 a CPU runs torch's ViT-B-32 in fp32 at its fp32 matmul rate; ONNX Runtime's
dynamically quantised graph (int8 weights, activations quantised per batch) does the same work
with integer dot products (AVX2 ``vpmaddubsw``, VNNI where there is one) and starts without
torch. With native bf16 it is as fast as torch's bf16 tower and needs half the memory. The
graph takes the decoder's uint8 pixels [B, S, S, 3] and returns what the torch embedder
returns: unit-length embeddings [B, D] and, for a model with an ITM head, the head's stored
tokens [B, P', d]. Weights are quantised with a 7-bit range (``reduce_range``) so that
AVX2's 16-bit pair sums cannot saturate: accuracy on an AVX2 machine is the accuracy measured
on a VNNI one (``bench/precision_bench.py``).

The graph is exported and quantised once per model and user (ViT-B-32: 85 MB on disk) and
cached under $XDG_CACHE_HOME/photoseek/image-engines; later runs open it in ~0.3 s without
importing torch. The export and the quantisation each run in a child process: in one process
they peaked at 2.7-2.9 GB RSS; apart, at 1.45 GB (export: weights written one at a time,
`external_weights`) and 1.25 GB (quantiser, given the graph's path), while the indexer
itself stays under 0.5 GB.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import BadModelSpec, WeightsUnavailable
from indexer.locations import cache_dir
from indexer.models.embedder import Embedder, ImageEmbedder
from indexer.models.fingerprints import cache_key
from indexer.models.hf_dual_spec import int8_refusal
from indexer.models.loading import (
    LoadedModel,
    ModelIdentity,
    ModelSpec,
    default_device,
    load_model,
    resolve_precision,
    root_log_filtered,
)
from indexer.towers.child_export import GRAPH, QUANTISE, run_in_child

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

ENGINE = "onnxruntime"
ONNX_PRECISIONS = ("int8", "fp32")  # fp32: measured beside int8 (bench/precision_bench.py)
_FORMAT = 1  # bump when the graph's inputs, outputs or quantisation change
_FP32_GRAPH, _META = "image-fp32.onnx", "engine.json"
_PIXELS, _EMBEDDING, _TOKENS = "pixels", "embedding", "tokens"


@dataclass(frozen=True)
class EngineMeta:
    """What the pipeline needs to know about a cached engine without loading the model."""

    dim: int
    image_size: int
    has_head: bool
    precision: str


def engine_folder(identity: ModelIdentity, precision: str) -> Path:
    """Where a model's engine is cached (per user, keyed by the model's identity)."""
    key = cache_key(_FORMAT, precision, identity.architecture, identity.weights)
    return cache_dir() / "image-engines" / key


def build_engine(spec: str, folder: Path, precision: str) -> EngineMeta:
    """Export the image tower of the model `spec` names (loaded in fp32) with pixel
    standardisation, L2 normalisation and the ITM head's token compaction, quantised to int8
    unless `precision` is fp32, and write it all to `folder` atomically.

    The export (torch) and the quantisation (onnx alone) each run in a child process of
    their own: no process holds both peaks, and this one holds neither."""
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        shape = run_in_child(
            {"job": GRAPH, "spec": spec, "target": str(staging / _FP32_GRAPH)},
            "exporting the image engine's graph",
        )
        meta = EngineMeta(int(shape["dim"]), int(shape["image_size"]), bool(shape["has_head"]),
                          precision)  # fmt: skip
        if precision != "fp32":
            job = {"job": QUANTISE, "source": str(staging / _FP32_GRAPH)}
            run_in_child({**job, "target": str(staging / _graph(precision))}, "quantising it")
            for name in os.listdir(staging):  # the fp32 graph was only the quantiser's input
                if name.startswith(_FP32_GRAPH):
                    (staging / name).unlink()
        (staging / _META).write_text(json.dumps(asdict(meta)) + "\n")
        shutil.rmtree(folder, ignore_errors=True)  # half an engine, from a killed build
        try:
            os.replace(staging, folder)
        except OSError:  # another process built it meanwhile: use theirs
            if not (folder / _META).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built the %s image engine in %s", precision, folder)
    return meta


def export_graph(loaded: LoadedModel, target: Path) -> dict[str, int | bool]:
    """Write `loaded`'s fp32 indexing graph to `target` (a child's job: imports torch);
    returns the engine's shape (dim, image_size, has_head)."""
    import torch

    from indexer.towers.export import _export, _mha_fastpath

    has_head = loaded.head is not None
    pixels = torch.zeros(2, loaded.image_size, loaded.image_size, 3, dtype=torch.uint8)
    outputs = [_EMBEDDING, _TOKENS] if has_head else [_EMBEDDING]
    axes = {name: {0: "batch"} for name in (_PIXELS, *outputs)}
    with torch.no_grad(), _mha_fastpath(False):
        _export(_index_graph(loaded), (pixels,), outputs, axes, target)
    return {"dim": loaded.dim, "image_size": loaded.image_size, "has_head": has_head}


def quantise_graph(source: Path, target: Path) -> None:
    """Quantise the fp32 graph `source` to int8 in `target` (a child's job: no torch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The graph's path, not the graph: given a loaded graph, the quantiser copies it and saves
    # and reloads the copy (three sets of fp32 weights in memory at once); from a path it
    # infers shapes on the file and loads it once.
    with root_log_filtered(_QuantiserNotes()):
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
        )


class _QuantiserNotes(logging.Filter):
    """Drops the quantiser's advice (pre-process the graph; uint8 pixels are not quantised):
    the graph is quantised as exported on purpose, and the pixels are its input."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "quantization" not in record.pathname.replace(os.sep, "/").split("/onnxruntime/")[-1]


def _index_graph(loaded: LoadedModel) -> Any:
    """uint8 pixels -> (unit embeddings, head tokens), as `ImageEmbedder.with_tokens` computes
    them; a module built here so that importing this file does not import torch."""
    import torch

    from indexer.models.itm_head import image_features_and_tokens
    from indexer.models.pixels import standardise

    class IndexGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.head = loaded.model, loaded.head

        def forward(self, pixels: torch.Tensor) -> Any:
            x = standardise(pixels.permute(0, 3, 1, 2), loaded.mean, loaded.std)
            if self.head is None:
                return torch.nn.functional.normalize(self.model.encode_image(x), dim=-1)
            features, patches = image_features_and_tokens(self.model, x)
            tokens = self.head.compact_image_tokens(patches, features)
            return torch.nn.functional.normalize(features, dim=-1), tokens

    return IndexGraph().eval()


class OnnxImageEmbedder:
    """An ONNX engine, with `ImageEmbedder`'s interface: uint8 [B, S, S, 3] -> embeddings."""

    engine = ENGINE

    def __init__(self, folder: Path, identity: ModelIdentity, threads: int | None = None) -> None:
        try:
            raw = json.loads((folder / _META).read_text())
            self.meta = EngineMeta(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise WeightsUnavailable(f"{folder}: not a usable image engine ({e})") from None
        self.identity, self.precision = identity, self.meta.precision
        self.dim, self.image_size = self.meta.dim, self.meta.image_size
        self.loaded: LoadedModel | None = None  # no torch model behind this engine
        self._session = _open_session(folder / _graph(self.precision), threads)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.with_tokens(pixels)[0]

    def with_tokens(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings [B, D] float32, and the ITM head's stored tokens [B, P', d] fp16 if any."""
        outputs = self._session.run(None, {_PIXELS: np.ascontiguousarray(pixels, np.uint8)})
        tokens = outputs[1].astype(np.float16) if self.meta.has_head else None
        return outputs[0].astype(np.float32, copy=False), tokens


def _graph(precision: str) -> str:
    return f"image-{precision}.onnx"


def _open_session(path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except (onnxruntime.capi.onnxruntime_pybind11_state.Fail, OSError) as e:
        raise WeightsUnavailable(f"{path}: cannot open the image engine ({e})") from None


def open_onnx_engine(
    spec: ModelSpec, precision: str = "int8", threads: int | None = None
) -> OnnxImageEmbedder:
    """The model's ONNX engine in `precision`, built (from its fp32 image tower) on first use."""
    identity = spec.identity()
    folder = engine_folder(identity, precision)
    if not (folder / _META).is_file():
        build_engine(identity.spec, folder, precision)
    return OnnxImageEmbedder(folder, identity, threads)


def open_image_embedder(
    spec: ModelSpec, precision: str = "auto", device: str | None = None
) -> Embedder:
    """The indexer's image embedder: int8 on ONNX Runtime where `precision` (auto: from what
    the CPU has) says int8, else the torch tower in that precision. A model family the int8
    engine does not serve well (`hf_dual_spec.int8_refusal`) gets what `auto` means for the
    torch tower (bf16 or fp32), and an explicit int8 is refused."""
    device = device or _device_without_torch() or default_device()
    chosen = resolve_precision(precision, device, int8=True)
    refused = int8_refusal(spec.name) if chosen == "int8" and spec.kind == "transformers" else None
    if refused is not None:
        if precision == "int8":
            raise BadModelSpec(f"{spec}: no int8 engine: {refused}; use --precision fp32 or bf16")
        chosen = resolve_precision(precision, device)
        log.info("%s: indexing in %s, not int8: %s", spec, chosen, refused)
    if chosen == "int8":
        return open_onnx_engine(spec, "int8")
    return ImageEmbedder(load_model(spec, chosen, device, "image"))


def _device_without_torch() -> str | None:
    """ "cpu" where no GPU driver is loaded (Linux), so that a CPU-only run of the ONNX engine
    never imports torch (~2 s) just to ask it; None: ask torch."""
    if platform.system() != "Linux":
        return None
    gpu = ("/proc/driver/nvidia/version", "/dev/kfd")  # NVIDIA's driver, AMD's ROCm
    return None if any(os.path.exists(p) for p in gpu) else "cpu"
