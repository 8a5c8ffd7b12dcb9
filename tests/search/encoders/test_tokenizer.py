"""The torch-free tokenizer must give exactly open_clip's token ids."""

from __future__ import annotations

import random

import numpy as np
import open_clip
import pytest
from open_clip.tokenizer import default_bpe

from indexer.errors import BadInput
from search.encoders.tokenizer import ClipTokenizer

AWKWARD_TEXTS = [
    "",
    "   ",
    "a photo of a cat",
    "A PHOTO OF A DOG!!!",
    "naïve café, résumé; Straße — Ærøskøbing",
    "東京の夜景と富士山",
    "фото собаки на пляже",
    "صورة قطة",
    "emoji 🐶🐱 party 🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇳🇿",
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt; &quot;quoted&quot; &#39;single&#39; &copy; 2024",
    "don't we'll they're I'M you've she'd it's",
    "3.14159 and 2024-01-01, 1,000,000 ½ ² ٣ 七",
    "tab\there\nnew line\r\n   many    spaces\u00a0nbsp\u2003em",
    "schÃ¶n mojibake â€œfixedâ€\x9d",
    "<start_of_text> literal markers <end_of_text>",
    "C++ / C# // e-mail: me@example.com #hashtag @user ~~~ ... ?!",
    "zero\u200bwidth and combining e\u0301 a\u0308",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "a long caption " * 40,
]


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer(default_bpe())


def expected(texts: list[str], context_length: int = 77) -> np.ndarray:
    return open_clip.tokenize(texts, context_length=context_length).numpy()


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_each_text_matches_open_clip(tokenizer: ClipTokenizer, text: str) -> None:
    np.testing.assert_array_equal(tokenizer([text]), expected([text]))


def test_batch_matches_open_clip(tokenizer: ClipTokenizer) -> None:
    ids = tokenizer(AWKWARD_TEXTS)
    assert ids.dtype == np.int64
    assert ids.shape == (len(AWKWARD_TEXTS), 77)
    np.testing.assert_array_equal(ids, expected(AWKWARD_TEXTS))


@pytest.mark.parametrize("words", [74, 75, 76, 200])
def test_truncation_at_the_context_boundary(tokenizer: ClipTokenizer, words: int) -> None:
    text = " ".join(["cat"] * words)  # one token per word
    ids = tokenizer(text)
    np.testing.assert_array_equal(ids, expected([text]))
    assert ids[0, -1] in (0, tokenizer.eot_id)


@pytest.mark.parametrize("context_length", [1, 5, 16, 100])
def test_other_context_lengths(tokenizer: ClipTokenizer, context_length: int) -> None:
    np.testing.assert_array_equal(
        tokenizer(AWKWARD_TEXTS, context_length),
        expected(AWKWARD_TEXTS, context_length),
    )


def test_random_unicode_matches_open_clip(tokenizer: ClipTokenizer) -> None:
    rng = random.Random(0)
    alphabet = [
        *"abcxyzABCXYZ0123456789 .,;:!?'\"-_()&#<>/\\\t\n",
        *map(chr, range(0x00C0, 0x0180)),  # Latin accents
        *map(chr, range(0x0370, 0x03FF)),  # Greek
        *map(chr, range(0x3040, 0x30FF)),  # kana
        *map(chr, range(0x1F300, 0x1F320)),  # emoji
        "\u0301",
        "\u200d",
        "\ufe0f",
    ]
    texts = ["".join(rng.choices(alphabet, k=rng.randint(1, 60))) for _ in range(60)]
    np.testing.assert_array_equal(tokenizer(texts), expected(texts))


def test_a_lone_string_is_one_row(tokenizer: ClipTokenizer) -> None:
    assert tokenizer("a dog").shape == (1, 77)


def test_no_texts_gives_no_rows(tokenizer: ClipTokenizer) -> None:
    assert tokenizer([]).shape == (0, 77)


def test_zero_context_length_is_refused(tokenizer: ClipTokenizer) -> None:
    with pytest.raises(BadInput):
        tokenizer("a dog", 0)


def test_a_vocabulary_that_decompresses_without_bound_is_refused(tmp_path) -> None:
    """The vocabulary comes from an index folder (untrusted): a gzip bomb is refused after a
    bounded read instead of being inflated whole into memory."""
    import gzip

    bomb = tmp_path / "bpe.txt.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        block = b"\n" * (1 << 20)
        for _ in range(64):  # 64 MiB of newlines in ~64 KB: 20x what CLIP's vocabulary inflates to
            f.write(block)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(BadInput, match="vocabulary") as caught:
        ClipTokenizer(bomb)
    assert "\n" not in str(caught.value)


def test_a_vocabulary_that_is_not_gzip_is_a_one_line_error(tmp_path) -> None:
    broken = tmp_path / "bpe.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(BadInput, match="vocabulary"):
        ClipTokenizer(broken)
