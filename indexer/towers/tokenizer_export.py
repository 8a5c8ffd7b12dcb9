"""The text side of an export: which tokenizer the query path runs, and example token rows.

A model tokenizes with CLIP's BPE (``open_clip.SimpleTokenizer``) or with a Hugging Face
tokenizer (open_clip's ``HFTokenizer``, or its older ``SigLipTokenizer``: SigLIP, SigLIP2,
MetaCLIP 2 worldwide, NLLB-CLIP, the xlm-roberta CLIPs). A Hugging Face tokenizer is saved as
tokenizer.json with the settings open_clip calls it with, for ``search.encoders.hf_tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from indexer.errors import BadModelSpec
from indexer.models.text_forward import OpenClipModel
from indexer.towers.spec import TOKENIZER_FILE, HfTokenizerSpec

# 256 byte symbols, the same with an end-of-word mark, 48,894 merges and two specials.
CLIP_BPE_VOCAB_SIZE = 49408
# Two rows, so the traced graph cannot quietly specialise the batch axis to 1.
EXAMPLE_BATCH = 2
_EXAMPLE_TEXTS = ["a photo of a dog", "two red cars parked near a café"]


@dataclass(frozen=True)
class TextSide:
    """What the export needs to know about how the model's text becomes token ids."""

    context_length: int
    examples: torch.Tensor  # [EXAMPLE_BATCH, context_length] ids to trace the text tower with
    hf: HfTokenizerSpec | None = None  # None: CLIP's BPE
    hf_json: str = ""  # the tokenizer.json text, when `hf` is set


def text_side(model: OpenClipModel, tokenizer: Any = None) -> TextSide:
    """The text side of `model` tokenized by `tokenizer` (open_clip's, as ``get_tokenizer``
    returns it; None stands for CLIP's BPE). Raises BadModelSpec for what cannot be served."""
    hf = getattr(tokenizer, "tokenizer", None)
    backend = getattr(hf, "backend_tokenizer", None)
    if hf is not None and backend is None:
        raise BadModelSpec(
            f"the model's tokenizer ({type(hf).__name__}) has no `tokenizers` form to run "
            "without torch"
        )
    vocab_size = _model_vocab_size(model)
    if backend is None:
        if vocab_size not in (0, CLIP_BPE_VOCAB_SIZE):  # 0: the model does not say
            raise BadModelSpec(
                f"text tower has {vocab_size} token ids and no Hugging Face tokenizer was given; "
                f"only CLIP's BPE vocabulary ({CLIP_BPE_VOCAB_SIZE}) or a Hugging Face "
                "tokenizer can be served without torch"
            )
        length = int(model.context_length)
        return TextSide(length, _clip_examples(length))
    if getattr(tokenizer, "tokenizer_mode", "") == "clips":
        raise BadModelSpec("open_clip's 'clips' tokenizer mode cannot be served without torch")
    ids = backend.get_vocab_size(with_added_tokens=True)
    if vocab_size and ids > vocab_size:
        raise BadModelSpec(
            f"the tokenizer has {ids} token ids but the text tower embeds only {vocab_size}"
        )
    spec = _hf_spec(tokenizer)
    examples = tokenizer(_EXAMPLE_TEXTS).to(torch.long)
    return TextSide(int(tokenizer.context_length), examples, spec, backend.to_str())


def _hf_spec(tokenizer: Any) -> HfTokenizerSpec:
    """How open_clip's `tokenizer` calls its Hugging Face tokenizer, as data."""
    hf = tokenizer.tokenizer
    if hf.pad_token_id is None:
        raise BadModelSpec("the tokenizer has no padding token; open_clip pads every text")
    strip = getattr(tokenizer, "strip_sep_token", False)
    if strip and hf.sep_token_id is None:
        raise BadModelSpec("the tokenizer strips a separator token it does not have")
    return HfTokenizerSpec(
        file=TOKENIZER_FILE,
        clean=_clean_name(tokenizer),
        pad_id=int(hf.pad_token_id),
        pad_token=str(hf.pad_token),
        padding_side=str(hf.padding_side),
        truncation_side=str(hf.truncation_side),
        strip_id=int(hf.sep_token_id) if strip else None,
    )


def _clean_name(tokenizer: Any) -> str:
    """The name of the cleaning function open_clip's tokenizer applies before tokenizing
    ("none" for a transformers model's tokenizer, which says so: `clean_name`)."""
    from open_clip import tokenizer as oc

    named = getattr(tokenizer, "clean_name", None)
    if isinstance(named, str):
        return named
    clean = getattr(tokenizer, "clean_fn", None)
    if clean is None:  # SigLipTokenizer: canonicalize_text(basic_clean(text)), hard-wired
        return "canonicalize"
    names = {oc._clean_lower: "lower", oc._clean_whitespace: "whitespace",
             oc._clean_canonicalize: "canonicalize"}  # fmt: skip
    if clean not in names:
        raise BadModelSpec(f"the tokenizer cleans text with {clean!r}, unknown to photoseek")
    return names[clean]


def _model_vocab_size(model: OpenClipModel) -> int:
    """Token ids the text tower embeds: CLIP keeps the count on the model, CustomTextCLIP on
    its text tower (0 when neither says)."""
    size = getattr(model, "vocab_size", None)
    if size is None:
        size = getattr(getattr(model, "text", None), "vocab_size", None)
    return int(size or 0)


def _clip_examples(context_length: int) -> torch.Tensor:
    """A plausible CLIP token batch: start, a few words, end, padding; rows of different
    lengths."""
    sot, eot = CLIP_BPE_VOCAB_SIZE - 2, CLIP_BPE_VOCAB_SIZE - 1
    tokens = torch.zeros(EXAMPLE_BATCH, context_length, dtype=torch.long)
    for row in range(EXAMPLE_BATCH):
        words = min(3 + row, context_length - 2)
        tokens[row, 0] = sot
        tokens[row, 1 : 1 + words] = torch.arange(320, 320 + words)
        tokens[row, 1 + words] = eot
    return tokens
