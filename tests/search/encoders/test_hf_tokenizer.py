"""The torch-free Hugging Face tokenizer: open_clip's cleaning, and bad files refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from open_clip.tokenizer import get_clean_fn
from tokenizers import Tokenizer, models, pre_tokenizers

from indexer.errors import BadInput
from indexer.towers.spec import CLEANERS as CLEANER_NAMES
from indexer.towers.spec import HfTokenizerSpec
from search.encoders import hf_tokenizer
from search.encoders.cleaning import CLEANERS
from search.encoders.hf_tokenizer import HfTokenizer

AWKWARD = [
    "A Photo of a DOG",
    "  spaces\tand\nnewlines\u00a0and\u2003em spaces  ",
    "&amp;quot;double-escaped&amp;quot; &lt;b&gt;",
    "the_snake_case: punctuation!? (brackets) [and] {braces} 'quotes' \"more\"",
    "mojibake: cafÃ© dÃ©jÃ  vu",
    "Crème brûlée — « guillemets » ¿qué? ¡sí!",
    "一只猫。東京の桜、「かぎ括弧」",
    "قطة، على النافذة؟",
    "emoji 🌅🐶👩‍👩‍👧 and ＦＵＬＬＷＩＤＴＨ",
    "",
]


@pytest.mark.parametrize("name", CLEANER_NAMES)
def test_cleaning_is_open_clips(name: str) -> None:
    theirs = get_clean_fn(name)
    assert [CLEANERS[name](t) for t in AWKWARD] == [theirs(t) for t in AWKWARD]


def _spec(file: str = "tokenizer.json") -> HfTokenizerSpec:
    return HfTokenizerSpec(file, "whitespace", 0, "<pad>", "right", "right")


def _write_tokenizer(path: Path) -> None:
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "a": 2, "dog": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


def test_ids_are_padded_and_cut_to_the_context_length(tmp_path: Path) -> None:
    _write_tokenizer(tmp_path / "tokenizer.json")
    tokenize = HfTokenizer(tmp_path / "tokenizer.json", _spec(), context_length=3)
    assert tokenize(["a  dog", "dog a cat dog", ""]).tolist() == [[2, 3, 0], [3, 2, 1], [0, 0, 0]]


@pytest.mark.parametrize("content", [b"{not json", b'{"model": 1}', b"\xff\xfe"])
def test_a_bad_tokenizer_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "tokenizer.json").write_bytes(content)
    with pytest.raises(BadInput, match="not a Hugging Face tokenizer.json") as caught:
        HfTokenizer(tmp_path / "tokenizer.json", _spec(), 8)
    assert "\n" not in str(caught.value)


def test_an_oversized_tokenizer_file_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_tokenizer(tmp_path / "tokenizer.json")
    monkeypatch.setattr(hf_tokenizer, "_MAX_TOKENIZER_BYTES", 64)
    with pytest.raises(BadInput, match="larger than"):
        HfTokenizer(tmp_path / "tokenizer.json", _spec(), 8)
