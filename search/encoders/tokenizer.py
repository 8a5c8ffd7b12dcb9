"""CLIP's byte-pair tokenizer for query text, without torch or open_clip.

Produces the same ids as ``open_clip.tokenize`` (its ``SimpleTokenizer`` with the default
"lower" cleaning and no reduction mask), so text embedded by the exported ONNX text tower
matches text embedded by the torch model the index was built with.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import regex

from indexer.errors import BadInput
from search.encoders.cleaning import CLEANERS

DEFAULT_CONTEXT_LENGTH = 77
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"

# CLIP's vocabulary is 256 byte symbols, the same with "</w>", these merges, and two specials.
_MERGE_COUNT = 49152 - 256 - 2
_END_OF_WORD = "</w>"
_WORD_CACHE_SIZE = 1 << 16
_NO_RANK = float("inf")
_MAX_VOCAB_BYTES = 16 << 20  # compressed or not; CLIP's inflates to 3.2 MB
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's "gzip framing" window setting
_clean = CLEANERS["lower"]


def _byte_symbols() -> dict[int, str]:
    """Map each byte to a printable character, so BPE never sees whitespace or control bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {b: chr(b) for b in printable}
    spare = 256
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(spare)
            spare += 1
    return symbols


def _read_merges(vocab_path: str | os.PathLike[str]) -> list[str]:
    """The ranked merges from a gzipped CLIP BPE file, each line "first second"; only the head
    of the file is used."""
    # One decompress and split: reading the gzip line by line costs a cold query ~0.1 s.
    # Line 0 is a version header; CLIP uses only the first _MERGE_COUNT merges after it (of
    # 262,000 lines: the rest is never split).
    text = _inflate(vocab_path).decode("utf-8", errors="replace")
    return text.split("\n", 1 + _MERGE_COUNT)[1 : 1 + _MERGE_COUNT]


def _inflate(vocab_path: str | os.PathLike[str]) -> bytes:
    """The file's gzip payload, refused past _MAX_VOCAB_BYTES on either side: the vocabulary
    is read from an index folder, which may come from anyone (a gzip bomb must not fill RAM)."""
    with open(vocab_path, "rb") as f:
        packed = f.read(_MAX_VOCAB_BYTES + 1)
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        data = inflater.decompress(packed, _MAX_VOCAB_BYTES + 1)
    except zlib.error as e:
        raise BadInput(f"{os.fsdecode(vocab_path)}: not a gzipped BPE vocabulary ({e})") from None
    if len(packed) > _MAX_VOCAB_BYTES or len(data) > _MAX_VOCAB_BYTES:
        raise BadInput(
            f"{os.fsdecode(vocab_path)}: BPE vocabulary larger than "
            f"{_MAX_VOCAB_BYTES >> 20} MiB; CLIP's is 3 MiB"
        )
    if not inflater.eof:
        raise BadInput(f"{os.fsdecode(vocab_path)}: truncated BPE vocabulary")
    return data


class ClipTokenizer:
    """Turns query text into CLIP token ids, identical to open_clip's SimpleTokenizer."""

    def __init__(
        self,
        vocab_path: str | os.PathLike[str],
        context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        self.context_length = context_length
        self._byte_symbols = _byte_symbols()
        # The merges stay lines ("first second", the pair a merge joins): ranked and joined by
        # the str methods and dict() in C, not a tuple per line, which cost a cold query 0.1 s.
        merges = _read_merges(vocab_path)
        bytes_vocab = list(self._byte_symbols.values())
        vocab = [
            *bytes_vocab,
            *(s + _END_OF_WORD for s in bytes_vocab),
            *"\n".join(merges).replace(" ", "").split("\n")[: len(merges)],
            START_OF_TEXT,
            END_OF_TEXT,
        ]
        # Later duplicates win, as in open_clip's dict(zip(...)) construction.
        self._ids = dict(zip(vocab, range(len(vocab)), strict=True))
        self._ranks = dict(zip(merges, range(len(merges)), strict=True))
        self.sot_id = self._ids[START_OF_TEXT]
        self.eot_id = self._ids[END_OF_TEXT]
        self._specials = {START_OF_TEXT: self.sot_id, END_OF_TEXT: self.eot_id}
        self._pattern = regex.compile(
            rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d"
            r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        # Queries repeat words; merging a word is the slow part, so remember the result per word.
        self._word_ids = lru_cache(maxsize=_WORD_CACHE_SIZE)(self._merge_word)

    def encode(self, text: str) -> list[int]:
        """The BPE ids of one text, without start/end markers or padding."""
        ids: list[int] = []
        for piece in self._pattern.findall(_clean(text)):
            word = "".join(self._byte_symbols[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(word))
        return ids

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
    ) -> np.ndarray:
        """Token ids [len(texts), context_length] int64: start, BPE ids, end, zero padding.

        Texts too long to fit are cut and their last kept id replaced by the end marker,
        as open_clip does.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else context_length
        if length < 1:
            raise BadInput(f"context length must be at least 1, got {length}")
        result = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id
            result[row, : len(ids)] = ids
        return result

    def _merge_word(self, word: str) -> tuple[int, ...]:
        """The ids of one pre-split word, after applying merges lowest rank first."""
        special = self._specials.get(word)
        if special is not None:
            return (special,)
        symbols = [*word[:-1], word[-1] + _END_OF_WORD]
        ranks = self._ranks
        while len(symbols) > 1:
            # A pair is looked up as its merge line; symbols never hold a space (`_byte_symbols`).
            pairs = [f"{first} {second}" for first, second in itertools.pairwise(symbols)]
            best = min(pairs, key=lambda pair: ranks.get(pair, _NO_RANK))
            if best not in ranks:
                break
            first, second = best.split(" ")
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                # Left to right and non-overlapping: "a a a" with merge (a, a) gives "aa a".
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(self._ids[s] for s in symbols)
