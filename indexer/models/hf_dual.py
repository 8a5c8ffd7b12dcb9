"""Dual encoders from transformers (CLIP, SigLIP, ALIGN, AltCLIP, Chinese-CLIP) behind the
interface photoseek uses for open_clip models, so that loading, indexing, fingerprints and the
ONNX export of the towers serve them unchanged.

A ``transformers:ORG/NAME`` model (or a ``save_pretrained`` folder) is loaded with
``AutoModel``; its tokenizer is called as open_clip's HFTokenizer calls one (padded and
truncated to a fixed length), which the torch-free query path repeats with ``tokenizers``; its
image processor's settings become photoseek's decoder resize and standardisation, so photos are
decoded once, by photoseek, for every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from indexer.errors import BadModelSpec
from indexer.models.hf_dual_spec import family, processor_preprocess

# Query texts are short: where the text tower allows more (BERT's 512), this many ids.
_MAX_CONTEXT = 77


@dataclass
class _Visual:
    """What callers read from an open_clip model's `visual`: its preprocessing and width."""

    preprocess_cfg: dict[str, Any]
    output_dim: int


class HfDualModel(torch.nn.Module):
    """A transformers dual encoder with open_clip's `encode_image` / `encode_text`."""

    def __init__(self, model: Any, pad_id: int | None, preprocess: dict[str, Any]) -> None:
        super().__init__()
        self.model: Any = model  # a transformers PreTrainedModel (untyped there)
        self.pad_id = pad_id  # masked out of the text tower's attention; None: nothing masked
        config = model.config
        self.vocab_size = int(config.text_config.vocab_size)
        self.visual = _Visual(preprocess, int(self._projection_dim(config)))
        self.logit_bias = getattr(model, "logit_bias", None)  # SigLIP's sigmoid

    @staticmethod
    def _projection_dim(config: Any) -> int:
        if config.model_type == "siglip":
            return int(config.text_config.projection_size or config.text_config.hidden_size)
        return int(config.projection_dim)

    @property
    def logit_scale(self) -> torch.Tensor:
        """log of the cosine's scale, as open_clip keeps it (ALIGN keeps a temperature)."""
        if hasattr(self.model, "logit_scale"):
            return self.model.logit_scale.detach().reshape(())
        return -torch.log(self.model.temperature.detach().reshape(()))

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        out = _features(self.model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        mask = None if self.pad_id is None else (tokens != self.pad_id).to(torch.long)
        out = _features(self.model.get_text_features(input_ids=tokens, attention_mask=mask))
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output holds the features."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HfDualTokenizer:
    """The model's tokenizer called as open_clip's HFTokenizer calls one: ids [N, L], special
    tokens added, truncated and padded to the context length, text otherwise as given."""

    clean_name = "none"  # no cleaning: the model's own tokenizer normalises, nothing else

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(
            texts,
            return_tensors="pt",
            max_length=self.context_length,
            padding="max_length",
            truncation=True,
        ).input_ids


def load_hf_dual(source: str, local: bool) -> tuple[HfDualModel, HfDualTokenizer]:
    """Build the model and tokenizer of a transformers repository id or folder (from files
    already here when `local`); BadModelSpec for one photoseek cannot serve."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(source, local_files_only=local)
    fam = family(getattr(config, "model_type", None), source)
    _check_align(config, source)
    # eager attention: the ONNX exporter traces it, not the fused kernels.
    model = AutoModel.from_pretrained(source, local_files_only=local, attn_implementation="eager")
    if type(model).__name__ != fam.cls:
        raise BadModelSpec(f"{source}: AutoModel built {type(model).__name__}, not {fam.cls}")
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    processor = AutoImageProcessor.from_pretrained(source, local_files_only=local)
    preprocess = processor_preprocess(processor.to_dict(), source)
    pad = tokenizer.pad_token_id
    if pad is None:
        raise BadModelSpec(f"{source}: the tokenizer has no padding token")
    positions = int(getattr(config.text_config, "max_position_embeddings", _MAX_CONTEXT))
    if config.model_type == "altclip":  # XLM-R's positions start after the padding id
        positions -= int(pad) + 1
    # SigLIP was trained on text padded to its full length; the others mask their padding.
    length = positions if fam.mask == "none" else min(positions, _MAX_CONTEXT)
    wrapped = HfDualModel(model, int(pad) if fam.mask == "pad" else None, preprocess)
    return wrapped.eval(), HfDualTokenizer(tokenizer, length)


def _check_align(config: Any, source: str) -> None:
    """ALIGN's image embedding is EfficientNet's pooled output, never projected: it only
    meets the projected text where the two widths agree."""
    if config.model_type != "align":
        return
    from transformers.models.align.modeling_align import round_filters

    vision = config.vision_config
    width = round_filters(vision, vision.out_channels[-1])  # the last block's channels
    if width != config.projection_dim:
        raise BadModelSpec(
            f"{source}: ALIGN's image embedding is {width} wide (EfficientNet's pooled "
            f"output) but its text is projected to {config.projection_dim}: they must be equal"
        )
