"""Resolve a --model value to open_clip weights, load them, and pick a device and precision.

The one place that touches model files, caches and the hub: encoders elsewhere receive a
loaded model. Accepted forms:

- ``NAME:TAG``         an open_clip architecture and pretrained tag (``ViT-B-32:laion2b_s34b_b79k``)
- ``NAME:FILE``        an architecture and a local checkpoint (``ViT-B-32-256:/models/mine.pt``)
- ``local-dir:DIR``    a folder with ``open_clip_config.json`` and weights (what ``train`` writes)
- ``DIR``              the same, for an existing folder
- ``hf-hub:ORG/NAME``  a Hugging Face repository in open_clip's layout
- ``transformers:ORG/NAME`` or ``transformers:DIR`` (or a ``save_pretrained`` DIR): a
  transformers dual encoder (CLIP, SigLIP, ALIGN, AltCLIP, Chinese-CLIP; ``hf_dual``)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.atomic import replacing
from indexer.errors import BadModelSpec, PhotoseekError, WeightsUnavailable
from indexer.locations import cache_dir, data_dir
from indexer.models.fingerprints import (
    SAMPLED_PREFIX,
    cache_key,
    checkpoint_fingerprint,
    sampled_fingerprint,
)
from indexer.models.hub_cache import (
    cached_tag_checkpoint,
    hub_offline,
    hub_snapshot,
    tag_preprocess,
)
from indexer.models.model_files import HEAD_FILE
from indexer.models.precision import PRECISIONS as PRECISIONS
from indexer.models.precision import resolve_precision

if TYPE_CHECKING:
    import torch

    from indexer.media.decode import ImageInput

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"


@dataclass(frozen=True)
class ModelIdentity:
    """What an index records about its model, to refuse a different one later."""

    spec: str  # the --model text as given (paths made absolute)
    architecture: str  # open_clip name, or the source of a local-dir/hf-hub model
    weights: str  # pretrained tag, "hub", or the SHA-256 of the checkpoint file
    # The checkpoint's sampled fingerprint, which earlier versions recorded as `weights`: kept
    # beside it (never stored) so that the indexes they wrote still know their model.
    sampled: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"spec": self.spec, "architecture": self.architecture, "weights": self.weights}

    def same_model(self, other: ModelIdentity) -> bool:
        if self.architecture != other.architecture:
            return False
        return self.weights == other.weights or any(
            old.weights.startswith(SAMPLED_PREFIX) and old.weights == new.sampled
            for old, new in ((self, other), (other, self))
        )


@dataclass(frozen=True)
class ModelSpec:
    """A parsed --model value."""

    kind: str  # "tag" | "file" | "local-dir" | "hf-hub" | "transformers"
    name: str  # architecture name, folder or hub id
    weights: str = ""  # tag or checkpoint path for kinds "tag" and "file"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        if not text:
            raise BadModelSpec("empty --model value")
        if text.startswith("local-dir:"):
            return cls("local-dir", str(Path(text[len("local-dir:") :]).expanduser().resolve()))
        if text.startswith("hf-hub:"):
            return cls("hf-hub", text[len("hf-hub:") :])
        from indexer.models import hf_dual_spec as hf

        if text.startswith(hf.PREFIX):
            return cls("transformers", hf.folder_source(text[len(hf.PREFIX) :]))
        if Path(text).expanduser().is_dir():
            folder = Path(text).expanduser().resolve()
            return cls("transformers" if hf.is_model_folder(folder) else "local-dir", str(folder))
        name, sep, weights = text.partition(":")
        if not sep or not weights:
            raise BadModelSpec(
                f"--model {text!r} names no weights: use NAME:TAG (e.g. {DEFAULT_MODEL}), "
                "NAME:/path/to/checkpoint, local-dir:DIR, hf-hub:ORG/NAME or transformers:ORG/NAME"
            )
        candidate = Path(weights).expanduser()
        if candidate.suffix or os.sep in weights or candidate.exists():
            return cls("file", name, str(candidate.resolve()))
        return cls("tag", name, weights)

    def __str__(self) -> str:
        if self.kind in ("local-dir", "hf-hub", "transformers"):
            return f"{self.kind}:{self.name}"
        return f"{self.name}:{self.weights}"

    def config(self) -> dict[str, Any] | None:
        """The architecture's config JSON, read without importing open_clip (None if unknown)."""
        if self.kind == "local-dir":
            path = Path(self.name) / "open_clip_config.json"
            try:
                return json.loads(path.read_text())["model_cfg"]
            except (OSError, ValueError, KeyError):
                return None
        if self.kind in ("hf-hub", "transformers"):
            return None
        for folder in (data_dir() / "model_configs", _open_clip_configs()):
            path = folder / f"{self.name}.json"
            if path.is_file():
                return json.loads(path.read_text())
        return None

    def image_input(self) -> ImageInput | None:
        """How the model will want photos resized, known before it is loaded (so decoding can
        start meanwhile); None where only the loaded model knows (a hub repository not in the
        cache yet, or an unknown architecture)."""
        from indexer.models.image_input import folder_input, known_input, preprocess_input

        if self.kind == "transformers":
            from indexer.models.hf_dual_spec import source_preprocess

            cfg = source_preprocess(self.name)
            return None if cfg is None else preprocess_input(cfg)
        if self.kind in ("local-dir", "hf-hub"):
            folder = self.name if self.kind == "local-dir" else hub_snapshot(self.name)
            return None if folder is None else folder_input(folder)
        config = self.config()
        return None if config is None else known_input(config, _tag_preprocess(self) or {})

    def identity(self) -> ModelIdentity:
        """The model's identity without loading it: a checkpoint is hashed whole once per
        version of the file (then cached per user), and its first and last 4 MB sampled."""
        if self.kind == "tag":
            return ModelIdentity(str(self), self.name, self.weights)
        if self.kind == "hf-hub" or (self.kind == "transformers" and not Path(self.name).is_dir()):
            return ModelIdentity(str(self), str(self), "hub")
        if self.kind == "transformers":
            from indexer.models.hf_dual_spec import weights_file

            checkpoint = weights_file(Path(self.name))
        else:
            checkpoint = Path(
                self.weights if self.kind == "file" else _dir_checkpoint(Path(self.name))
            )
        return ModelIdentity(
            str(self),
            self.name,
            checkpoint_fingerprint(checkpoint),
            sampled_fingerprint(checkpoint),
        )


def current_identity(recorded: ModelIdentity) -> ModelIdentity:
    """`recorded` as this version names it: one an earlier version recorded (a sampled
    fingerprint) becomes its checkpoint's SHA-256 while its spec still names a checkpoint with
    that sample; anything else is returned as it is. Caches key on this, not on samples."""
    if not recorded.weights.startswith(SAMPLED_PREFIX):
        return recorded
    try:
        current = ModelSpec.parse(recorded.spec).identity()
    except PhotoseekError:  # the checkpoint has gone: the record is all there is
        return recorded
    return current if recorded.same_model(current) else recorded


@dataclass
class LoadedModel:
    """An open_clip model ready to encode, with what callers need to feed it."""

    model: Any  # open_clip.CLIP, in eval mode on `device` in `dtype`
    identity: ModelIdentity
    tokenizer: Any
    device: str
    dtype: torch.dtype
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    head: Any = None  # the ITM head (indexer.itm_head.ItmHead) of a model folder that has one
    head_alpha: float = 1.0  # the head's weight of the ITC score in the fused rerank score
    has_text_tower: bool = True  # False: loaded with towers="image", the text side unusable

    @property
    def image_input(self) -> ImageInput:
        """How photos are resized for this model (BadModelSpec if the decoder cannot)."""
        from indexer.models.image_input import preprocess_input

        return preprocess_input(self.model.visual.preprocess_cfg)


def _open_clip_configs() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    locations = spec.submodule_search_locations if spec else None
    return Path(locations[0]) / "model_configs" if locations else Path("/nonexistent")


def _dir_checkpoint(folder: Path) -> str:
    if not (folder / "open_clip_config.json").is_file():
        raise WeightsUnavailable(f"{folder}: no open_clip_config.json (not a model folder)")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.pth"):
        if (folder / name).is_file():
            return str(folder / name)
    raise WeightsUnavailable(f"{folder}: no open_clip_model.safetensors in the model folder")


@functools.cache
def register_configs() -> None:
    """Make the architectures shipped in data/model_configs known to open_clip (once)."""
    import open_clip

    open_clip.add_model_config(data_dir() / "model_configs")


def list_architectures() -> list[str]:
    """Names of every architecture open_clip can build, the shipped tiny ones included."""
    import open_clip

    register_configs()
    return open_clip.list_models()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _tag_preprocess(spec: ModelSpec) -> dict[str, Any] | None:
    return tag_preprocess(spec.name, spec.weights) if spec.kind == "tag" else None


def _unavailable(spec: ModelSpec, why: str) -> WeightsUnavailable:
    local = "transformers:DIR" if spec.kind == "transformers" else "local-dir:DIR"
    if spec.kind not in ("hf-hub", "transformers"):
        local = f"{spec.name}:/path/to/open_clip_model.safetensors or {local}"
    return WeightsUnavailable(
        f"cannot load weights for {spec}: {why}; point --model at a local checkpoint ({local})"
    )


def _create(spec: ModelSpec) -> tuple[Any, Any]:
    import open_clip

    register_configs()
    if spec.kind == "transformers":
        from indexer.models.hf_dual import load_hf_dual

        return load_hf_dual(spec.name, local=Path(spec.name).is_dir() or hub_offline())
    if spec.kind == "local-dir":
        _dir_checkpoint(Path(spec.name))
        model = open_clip.create_model(f"local-dir:{spec.name}")
        return model, open_clip.get_tokenizer(f"local-dir:{spec.name}")
    if spec.kind == "hf-hub":
        snapshot = hub_snapshot(spec.name)
        if snapshot is None and hub_offline():
            raise _unavailable(spec, "offline and not in the local cache")
        source = f"local-dir:{snapshot}" if snapshot else f"hf-hub:{spec.name}"
        return open_clip.create_model(source), open_clip.get_tokenizer(source)
    if spec.name not in open_clip.list_models():
        raise BadModelSpec(f"unknown architecture {spec.name!r} (see `photoseek models`)")
    weights = spec.weights
    if spec.kind == "tag":
        if spec.weights not in open_clip.list_pretrained_tags_by_model(spec.name):
            raise BadModelSpec(f"{spec.name} has no pretrained tag {spec.weights!r}")
        cached = cached_tag_checkpoint(spec.name, spec.weights)
        if cached is None and hub_offline():
            raise _unavailable(spec, "offline and not in the local cache")
        weights = cached or spec.weights
    elif not Path(weights).is_file():
        raise _unavailable(spec, f"no such file {weights}")
    model = _mapped(spec, weights) if Path(weights).is_file() else None
    if model is None:
        model = open_clip.create_model(spec.name, pretrained=weights, require_pretrained=True,
                                       force_preprocess_cfg=_tag_preprocess(spec))  # fmt: skip
    return model, open_clip.get_tokenizer(spec.name)


def _mapped(spec: ModelSpec, path: str) -> Any:
    """The model with the checkpoint's tensors memory-mapped in place of its random ones: one
    copy of the weights where open_clip's load holds two (2 x 0.6 GB for ViT-B-32). None for a
    checkpoint open_clip must convert first (older layouts, resized position tables)."""
    import open_clip

    with root_log_filtered(QuietRandomInit()):
        model = open_clip.create_model(
            spec.name, load_weights=False, force_preprocess_cfg=_tag_preprocess(spec)
        )
    try:
        model.load_state_dict(_checkpoint_state(path, ""), strict=True, assign=True)
    except Exception as e:  # noqa: BLE001 - each layout open_clip converts fails its own way
        log.info("memory-mapped load of %s fell back to open_clip's: %s", path, e)
        return None
    return model


def load_model(
    spec: ModelSpec, precision: str = "auto", device: str | None = None, towers: str = "both"
) -> LoadedModel:
    """Build the model for `spec`, load its weights, and place it on a device in a precision.

    `towers="image"` asks for the image tower alone, which indexing needs: when the weights
    are a local file and no ITM head must check them, the model is built on the meta device
    (no random initialisation) and only the image tower's tensors are read, memory-mapped,
    from the checkpoint; the text tower stays unmaterialised. Otherwise both are loaded.
    """
    import torch

    if towers not in ("both", "image"):
        raise BadModelSpec(f"unknown towers {towers!r}; choose both or image")
    device = device or default_device()
    precision = resolve_precision(precision, device)
    image_only = towers == "image" and not _has_head(spec)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    try:
        created = _create_image_only(spec, dtype) if image_only else None
        image_only = created is not None
        model, tokenizer = created or _create(spec)
    except (BadModelSpec, WeightsUnavailable):
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt checkpoint fails deep in torch/pickle in many ways
        raise _unavailable(spec, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    head, alpha = (None, 1.0) if image_only else _load_head(spec, model)  # fp32 fingerprint
    if image_only:
        model.visual.to(device=device, dtype=dtype).eval()
    else:
        model = model.to(device=device, dtype=dtype).eval()
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    return LoadedModel(
        model=model,
        identity=spec.identity(),
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        image_size=size if isinstance(size, int) else int(size[0]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        dim=_embedding_dim(model),
        head=head.to(device=device, dtype=dtype) if head is not None else None,
        head_alpha=alpha,
        has_text_tower=not image_only,
    )


def _embedding_dim(model: Any) -> int:
    """The width of the joint embedding space. timm image towers do not record it, so then
    the text tower's, which projects into the same space."""
    for tower in ("visual", "text"):
        dim = getattr(getattr(model, tower, None), "output_dim", None)
        if dim is not None:
            return int(dim)
    return int(model.text_projection.shape[-1])


def _local_checkpoint(spec: ModelSpec) -> str | None:
    """The checkpoint file of `spec` when it is already on this machine."""
    if spec.kind == "file":
        return spec.weights if Path(spec.weights).is_file() else None
    if spec.kind == "local-dir":
        return _dir_checkpoint(Path(spec.name))
    if spec.kind == "tag":
        import open_clip

        register_configs()
        if spec.weights not in open_clip.list_pretrained_tags_by_model(spec.name):
            return None
        return cached_tag_checkpoint(spec.name, spec.weights)
    return None


def _create_image_only(spec: ModelSpec, dtype: torch.dtype) -> tuple[Any, Any] | None:
    """The model with only its image tower's weights, or None when that cannot be done here
    (weights not a local file, or a checkpoint layout other than open_clip's own).

    Casting a memory-mapped fp32 tower to bf16 holds both at once (~0.5 GB for ViT-B-32), so
    the cast tower is cached per user and later loads map it as it is: no copy at all.
    """
    import open_clip
    import torch

    path = _local_checkpoint(spec)
    if path is None:
        return None
    cached = _image_tower_cache(spec, dtype)
    register_configs()
    name = f"local-dir:{spec.name}" if spec.kind == "local-dir" else spec.name
    if name not in open_clip.list_models() and spec.kind != "local-dir":
        return None
    with torch.device("meta"), root_log_filtered(QuietRandomInit()):
        model = open_clip.create_model(
            name, load_weights=False, device="meta", force_preprocess_cfg=_tag_preprocess(spec)
        )
    try:
        if cached.is_file():
            visual = torch.load(cached, map_location="cpu", mmap=True, weights_only=True)
            model.visual.load_state_dict(visual, strict=True, assign=True)
        else:
            visual = _checkpoint_state(path, "visual.")
            model.visual.load_state_dict(visual, strict=True, assign=True)
            model.visual.to(dtype)
    except (RuntimeError, KeyError, ValueError, OSError) as e:  # converted or legacy formats
        log.info("image-tower-only load of %s fell back to a full load: %s", path, e)
        return None
    if any(t.is_meta for t in (*model.visual.parameters(), *model.visual.buffers())):
        # Buffers computed when the tower is built, never stored (timm's rotary tables).
        log.info("image tower of %s has tensors no checkpoint holds: a full load", path)
        return None
    if not cached.is_file() and dtype != torch.float32:
        try:
            _save_atomically(model.visual.state_dict(), cached)
        except OSError as e:  # a read-only cache costs the next run memory, nothing else
            log.info("could not cache the %s image tower in %s: %s", dtype, cached, e)
    return model, open_clip.get_tokenizer(name)


def _image_tower_cache(spec: ModelSpec, dtype: torch.dtype) -> Path:
    identity = spec.identity()
    key = cache_key(identity.architecture, identity.weights, dtype)
    return cache_dir() / "image-towers" / f"{key}.pt"


def _save_atomically(state: dict[str, torch.Tensor], target: Path) -> None:
    import torch

    with replacing(target) as tmp:
        torch.save({k: v.contiguous() for k, v in state.items()}, tmp)


def _checkpoint_state(path: str, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of an open_clip checkpoint whose names start with `prefix` (removed),
    memory-mapped."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if next(iter(state)).startswith("module."):  # saved from DistributedDataParallel
        prefix = "module." + prefix
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class QuietRandomInit(logging.Filter):
    """Drops open_clip's warning that a model built without weights is random: photoseek does
    that on purpose (training from scratch; weights assigned right after building)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextmanager
def root_log_filtered(quiet: logging.Filter) -> Iterator[None]:
    """`quiet` on the root logger (where open_clip and onnxruntime's quantiser log) for the
    block."""
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def _has_head(spec: ModelSpec) -> bool:
    return spec.kind == "local-dir" and (Path(spec.name) / HEAD_FILE).is_file()


def _load_head(spec: ModelSpec, model: Any) -> tuple[Any, float]:
    """The ITM head `photoseek train` saved beside a model folder's weights, if any, and its
    fused-score alpha."""
    if not _has_head(spec):
        return None, 1.0
    from indexer.models.model_files import head_alpha, load_head

    return load_head(spec.name, model), head_alpha(Path(spec.name))
