"""The weight syntax of query terms: `2:beach` weighs, `10:30 sunset` and `16:9` are text."""

from __future__ import annotations

import os

import pytest

from search.query import Term, parse_terms


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["10:30", "sunset"], Term(text="10:30 sunset")),
        (["16:9"], Term(text="16:9")),
        (["4:3", "crop"], Term(text="4:3 crop")),
        (["2:", "beach"], Term(text="2: beach")),
        (["1:1.5"], Term(text="1:1.5")),
    ],
)
def test_digits_after_the_colon_are_text_not_a_weight(words, expected):
    assert parse_terms(words) == [expected]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["2:beach"], Term(text="beach", weight=2.0)),
        (["0.5:red", "car"], Term(text="red car", weight=0.5)),
        ([".5:été"], Term(text="été", weight=0.5)),
        (['3:"3d render"'], Term(text="3d render", weight=3.0)),
        (["3:'24", "hours'"], Term(text="24 hours", weight=3.0)),
    ],
)
def test_a_weight_precedes_a_letter_or_a_quoted_text(words, expected):
    assert parse_terms(words) == [expected]


def test_a_weight_may_precede_an_existing_image(tmp_path):
    picture = tmp_path / "42.jpg"
    picture.write_bytes(b"x")
    term = parse_terms(["-", "noise", "+", f"2:{picture}"])[1]
    assert term == Term(image=os.fsencode(picture), weight=2.0)
    # Not an image file: the words stay text.
    assert parse_terms([f"2:{tmp_path}/9.jpg"]) == [Term(text=f"2:{tmp_path}/9.jpg")]


def test_weights_sign_with_the_operator():
    terms = parse_terms(["beach", "-", "2:people", "+", "16:9"])
    assert terms == [Term(text="beach"), Term(text="people", weight=-2.0), Term(text="16:9")]
