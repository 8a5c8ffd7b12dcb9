"""Tiny open_clip models of each text family that tokenizes with a Hugging Face tokenizer,
built from configs with a small tokenizer trained here on a few sentences (no downloads).

Each family mirrors a real open_clip config in what matters to the query path: tokenizer
model, special tokens and padding, cleaning, pooling and masking, HF text encoder or not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

# Latin with accents, Chinese, Japanese, Arabic, emoji; the tokenizers are trained on them.
SENTENCES = [
    "a photo of a dog on the beach",
    "Crème brûlée à la française, déjà vu in São Paulo",
    "一只猫坐在窗台上看雨",
    "東京の夜景と桜の花、ひらがなとカタカナ",
    "قطة تجلس على النافذة في المساء",
    "sunset 🌅 over the sea with a happy dog 🐶",
    "two red cars parked near a café",
    "the_quick brown fox: jumps! over (the) lazy dog?",
]
TEXTS = [
    "a photo of a dog on the beach",
    "",
    "Crème brûlée à Paris, déjà vu",
    "一只猫在窗台上",
    "東京の桜",
    "قطة على النافذة",
    "sunset 🌅🐶 over the sea",
    "&quot;red car&quot; parked_near a CAFÉ!!",
    "a very long caption that keeps going " * 6,
    "zebra xylophone quokka",  # pieces the tokenizer never saw whole
]
CONTEXT = 16
VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
# A SigLIP-like image tower: timm's test ViT with attention-pool ("map") pooling.
TIMM_VISION = {"image_size": 160, "timm_model_name": "test_vit3", "timm_model_pretrained": False,
               "timm_pool": "map", "timm_proj": "none"}  # fmt: skip


def _unigram(specials: list[str], template: str, normalizer: Any = None) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer (T5/SigLIP, XLM-R, NLLB)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizer or normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    unk = next(s for s in specials if "unk" in s)
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token=unk)
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tok.post_processor = _template(tok, template)
    return tok


def _byte_bpe(specials: list[str], template: str) -> Tokenizer:
    """A byte-level BPE tokenizer (Gemma-like in having no unknown text: SigLIP2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tok.post_processor = _template(tok, template)
    return tok


def _wordpiece() -> Tokenizer:
    """BERT's uncased WordPiece (CLIPA strips its [SEP])."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    tok.train_from_iterator(SENTENCES * 4, trainer)
    tok.post_processor = _template(tok, "[CLS] $A [SEP]")
    return tok


def _template(tok: Tokenizer, single: str) -> processors.TemplateProcessing:
    names = [piece for piece in single.split() if piece != "$A"]
    return processors.TemplateProcessing(
        single=single, special_tokens=[(name, tok.token_to_id(name)) for name in names]
    )


@dataclass(frozen=True)
class Family:
    """One text family: its tokenizer, the HF tokenizer's special tokens, and its config."""

    name: str
    tokenizer: Callable[[], Tokenizer]
    special: dict[str, str]  # transformers' names (pad_token, eos_token, ...) to tokens
    text_cfg: Callable[[int, Path], dict[str, Any]]  # (vocab size, folder) -> text_cfg
    embed_dim: int = 32
    vision: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None  # top-level config keys (custom_text, logit bias)


def _siglip_text(vocab: int, _: Path) -> dict[str, Any]:
    return {"context_length": CONTEXT, "vocab_size": vocab, "width": 32, "heads": 2, "layers": 2,
            "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "norm_kwargs": {"eps": 1e-6}}  # fmt: skip


def _siglip2_text(vocab: int, folder: Path) -> dict[str, Any]:
    return {**_siglip_text(vocab, folder), "act_kwargs": {"approximate": "tanh"}}


def _worldwide_text(vocab: int, _: Path) -> dict[str, Any]:
    return {"context_length": CONTEXT, "vocab_size": vocab, "width": 32, "heads": 2, "layers": 2,
            "pool_type": "eos", "eos_id": 2}  # fmt: skip


def _clipa_text(vocab: int, _: Path) -> dict[str, Any]:
    return {"context_length": CONTEXT, "vocab_size": vocab, "width": 32, "heads": 2, "layers": 2,
            "pool_type": "last", "no_causal_mask": True,
            "tokenizer_kwargs": {"strip_sep_token": True}}  # fmt: skip


def _xlmr_text(vocab: int, folder: Path) -> dict[str, Any]:
    from transformers import XLMRobertaConfig

    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=CONTEXT + 4, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2)  # fmt: skip
    config.save_pretrained(folder / "encoder")
    return {"hf_model_name": str(folder / "encoder"), "hf_pooler_type": "mean_pooler",
            "context_length": CONTEXT}  # fmt: skip


def _nllb_text(vocab: int, folder: Path) -> dict[str, Any]:
    from transformers import M2M100Config

    config = M2M100Config(vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64,
                          max_position_embeddings=CONTEXT + 4, pad_token_id=1,
                          bos_token_id=0, eos_token_id=2, scale_embedding=True)  # fmt: skip
    config.save_pretrained(folder / "encoder")
    return {"hf_model_name": str(folder / "encoder"), "hf_proj_type": "linear",
            "hf_pooler_type": "cls_pooler", "context_length": CONTEXT}  # fmt: skip


_XLM_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_XLM_TOKENS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
_SIGMOID = {"custom_text": True, "init_logit_bias": -10}

FAMILIES = [
    # SigLIP: T5 SentencePiece, "</s>" appended, padded with "</s>" (pad = eos), canonical text.
    Family(
        "siglip",
        lambda: _unigram(["<pad>", "</s>", "<unk>"], "$A </s>"),
        {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>"},
        _siglip_text,
        embed_dim=96,
        vision=TIMM_VISION,
        extra=_SIGMOID,
    ),  # fmt: skip
    # SigLIP2: Gemma-style BPE, "<eos>" appended, "<pad>" = 0.
    Family(
        "siglip2",
        lambda: _byte_bpe(["<pad>", "<eos>", "<bos>", "<unk>"], "$A <eos>"),
        {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"},
        _siglip2_text,
        extra=_SIGMOID,
    ),  # fmt: skip
    # MetaCLIP 2 worldwide: XLM-V's SentencePiece with open_clip's causal tower, pooled at eos=2.
    Family(
        "worldwide", lambda: _unigram(_XLM_SPECIALS, "<s> $A </s>"), _XLM_TOKENS, _worldwide_text
    ),  # fmt: skip
    # CLIPA: BERT WordPiece, [SEP] stripped to 0.
    Family(
        "clipa",
        _wordpiece,
        {"pad_token": "[PAD]", "sep_token": "[SEP]", "cls_token": "[CLS]", "unk_token": "[UNK]"},
        _clipa_text,
    ),  # fmt: skip
    # xlm-roberta-base-ViT-B-32: an HF XLM-R encoder, mean pooled.
    Family(
        "xlm-roberta", lambda: _unigram(_XLM_SPECIALS, "<s> $A </s>"), _XLM_TOKENS, _xlmr_text
    ),  # fmt: skip
    # nllb-clip: NLLB's encoder (M2M100), [eng_Latn] X </s>, CLS pooled, linear projection.
    Family(
        "nllb",
        lambda: _unigram([*_XLM_SPECIALS, "eng_Latn"], "eng_Latn $A </s>"),
        _XLM_TOKENS,
        _nllb_text,
    ),  # fmt: skip
]


def build(family: Family, folder: Path) -> str:
    """Write the family's tokenizer and config under folder, register the config with
    open_clip, and return its model name."""
    import open_clip
    from transformers import PreTrainedTokenizerFast

    tok = family.tokenizer()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **family.special)
    hf.save_pretrained(folder / "tokenizer")
    text_cfg = family.text_cfg(tok.get_vocab_size(), folder)
    config = {
        "embed_dim": family.embed_dim,
        "vision_cfg": family.vision or VISION,
        "text_cfg": {**text_cfg, "hf_tokenizer_name": str(folder / "tokenizer")},
        **(family.extra or {}),
    }
    name = f"photoseek-test-{family.name}"
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    open_clip.add_model_config(path)
    return name
