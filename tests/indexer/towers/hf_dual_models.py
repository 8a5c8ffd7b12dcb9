"""Tiny transformers dual encoders of each family photoseek serves, built from configs with
random weights, a small tokenizer trained here and an image processor, saved with
``save_pretrained`` as a user's folder would be (no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_families import _XLM_SPECIALS, _XLM_TOKENS, _byte_bpe, _unigram, _wordpiece
from tokenizers import Tokenizer

WIDTH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2}  # fmt: skip
VIT = {**WIDTH, "image_size": 32, "patch_size": 16}
PROJECTION = 24
_BERT_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                "sep_token": "[SEP]"}  # fmt: skip
_CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


@dataclass(frozen=True)
class DualFamily:
    """One transformers model class: its tokenizer, special tokens, config and processor."""

    name: str
    tokenizer: Callable[[], Tokenizer]
    special: dict[str, str]
    config: Callable[[Tokenizer], Any]  # the tokenizer (for its ids) -> the model's config
    processor: Callable[[], Any]
    masked: bool = True  # whether the model's own use passes the tokenizer's attention mask
    tune: Callable[[Any], None] | None = None  # adjusts the random weights before saving


def _ids(tok: Tokenizer, **names: str) -> dict[str, int]:
    return {f"{key}_token_id": tok.token_to_id(token) for key, token in names.items()}


def _clip(tok: Tokenizer) -> Any:
    from transformers import CLIPConfig

    ids = _ids(tok, bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>")
    text = {**WIDTH, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": 16, **ids}
    return CLIPConfig(text_config=text, vision_config=VIT, projection_dim=PROJECTION)


def _siglip(tok: Tokenizer) -> Any:
    from transformers import SiglipConfig

    ids = _ids(tok, eos="</s>", pad="</s>")
    text = {**WIDTH, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": 16, **ids}
    return SiglipConfig(text_config=text, vision_config=VIT)


def _bert_text(tok: Tokenizer) -> dict[str, Any]:
    return {**WIDTH, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": 40,
            "pad_token_id": tok.token_to_id("[PAD]")}  # fmt: skip


def _chinese_clip(tok: Tokenizer) -> Any:
    from transformers import ChineseCLIPConfig

    return ChineseCLIPConfig(
        text_config=_bert_text(tok), vision_config=VIT, projection_dim=PROJECTION
    )


def _altclip(tok: Tokenizer) -> Any:
    from transformers import AltCLIPConfig

    text = {**WIDTH, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": 24,
            "project_dim": PROJECTION, **_ids(tok, pad="<pad>", bos="<s>", eos="</s>")}  # fmt: skip
    return AltCLIPConfig(text_config=text, vision_config=VIT, projection_dim=PROJECTION)


def align_config(tok: Tokenizer, projection: int = 32) -> Any:
    """A tiny ALIGN: BERT text, an EfficientNet image tower whose last block's 32 channels,
    pooled, are the image embedding (unprojected)."""
    from transformers import AlignConfig

    vision = {"image_size": 32, "width_coefficient": 0.1, "depth_coefficient": 0.1}
    return AlignConfig(text_config=_bert_text(tok), vision_config=vision, projection_dim=projection)


def _lively_efficientnet(model: Any) -> None:
    """He-initialised convolutions: with transformers' initialisation a tiny EfficientNet's
    pooled output is ~1e-30, too small for any cosine to mean something."""
    import torch

    for module in model.vision_model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)


def _clip_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _siglip_processor() -> Any:
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2)  # bilinear


def _chinese_processor() -> Any:
    from transformers import ChineseCLIPImageProcessor

    return ChineseCLIPImageProcessor(size={"height": 32, "width": 32},
                                     crop_size={"height": 32, "width": 32})  # fmt: skip


def _efficientnet_processor() -> Any:
    from transformers import EfficientNetImageProcessor

    # Inception-style [-1, 1] pixels by the rescale offset, no normalisation after it.
    return EfficientNetImageProcessor(size={"height": 32, "width": 32}, rescale_offset=True,
                                      rescale_factor=1 / 127.5, do_normalize=False)  # fmt: skip


FAMILIES = [
    DualFamily(
        "clip",
        lambda: _byte_bpe(_CLIP_SPECIALS, "<|startoftext|> $A <|endoftext|>"),
        {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        },
        _clip,
        _clip_processor,
    ),  # fmt: skip
    DualFamily(
        "siglip",
        lambda: _unigram(["<pad>", "</s>", "<unk>"], "$A </s>"),
        {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>"},
        _siglip,
        _siglip_processor,
        masked=False,
    ),  # fmt: skip
    DualFamily("chinese_clip", _wordpiece, _BERT_TOKENS, _chinese_clip, _chinese_processor),
    DualFamily(
        "altclip",
        lambda: _unigram(_XLM_SPECIALS, "<s> $A </s>"),
        _XLM_TOKENS,
        _altclip,
        _clip_processor,
    ),  # fmt: skip
    DualFamily(
        "align",
        _wordpiece,
        _BERT_TOKENS,
        align_config,
        _efficientnet_processor,
        tune=_lively_efficientnet,
    ),  # fmt: skip
]


def save_family(family: DualFamily, folder: Path, config: Any = None) -> Path:
    """The family's model (seeded random weights, or from `config`), tokenizer and image
    processor saved in `folder` with save_pretrained; returns the folder."""
    import torch
    from transformers import AutoModel, PreTrainedTokenizerFast

    tok = family.tokenizer()
    torch.manual_seed(0)
    model = AutoModel.from_config(config or family.config(tok))
    if family.tune is not None:
        family.tune(model)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, **family.special).save_pretrained(folder)
    family.processor().save_pretrained(folder)
    return folder
