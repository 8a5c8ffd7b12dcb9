"""photoseek's decode loop on hand-made next-token distributions: the right answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from indexer.captioning.decoding import beam_search, sample
from indexer.captioning.protocol import Generation

END, A, B, START = 0, 1, 2, 3


def _table(rows: dict[tuple[int, ...], dict[int, float]], default: dict[int, float]):  # noqa: ANN202
    """A step whose next-token probabilities depend on the tokens so far, as the table says."""

    def step(tokens: torch.Tensor) -> torch.Tensor:
        out = torch.full((tokens.shape[0], 4), -1e9)
        for i, row in enumerate(tokens.tolist()):
            for token, p in rows.get(tuple(row), default).items():
                out[i, token] = math.log(p)
        return out

    return step


def test_greedy_stops_at_the_end_token_and_the_cap():
    ends = _table({}, {END: 0.9, A: 0.1})
    assert sample(ends, 1, START, END, Generation(), "cpu") == [[]]
    assert sample(ends, 1, START, END, Generation(min_tokens=3), "cpu") == [[A, A]]
    never = _table({}, {B: 1.0})
    assert sample(never, 2, START, END, Generation(max_tokens=5), "cpu") == [[B] * 4] * 2


def test_a_finished_row_waits_for_the_others():
    # row 0 ends at once, row 1 (told apart by its own tokens) only after two words
    rows = {(START,): {A: 0.6, END: 0.4}, (START, A): {B: 0.9, END: 0.1}}
    step = _table(rows, {END: 1.0})
    assert sample(step, 1, START, END, Generation(), "cpu") == [[A, B]]

    def two(tokens: torch.Tensor) -> torch.Tensor:
        first = step(tokens)
        first[0] = torch.tensor([0.0, -1e9, -1e9, -1e9])  # row 0: the end token first
        return first if tokens.shape[1] == 1 else step(tokens)

    assert sample(two, 2, START, END, Generation(), "cpu") == [[], [A, B]]


def test_beams_find_the_likelier_caption_greedy_misses():
    # A is likelier first, but nothing follows it surely; B then the end is the likeliest caption
    rows = {(START,): {A: 0.6, B: 0.4}, (START, A): {END: 0.34, A: 0.33, B: 0.33},
            (START, B): {END: 0.99, A: 0.01}}  # fmt: skip
    step = _table(rows, {END: 1.0})
    assert sample(step, 1, START, END, Generation(), "cpu") == [[A]]
    assert beam_search(step, START, END, Generation("beam", beams=2), "cpu") == [B]
    assert beam_search(step, START, END, Generation("beam", beams=1), "cpu") == [A]


@pytest.mark.parametrize("mode", ["top_k", "top_p"])
def test_sampling_stays_among_the_kept_tokens(mode: str):
    step = _table({}, {A: 0.5, B: 0.3, END: 0.2})
    kept = Generation(mode, top_k=1, top_p=0.4, max_tokens=12, seed=5)
    assert sample(step, 3, START, END, kept, "cpu") == [[A] * 11] * 3
    wider = Generation(mode, top_k=2, top_p=0.7, max_tokens=12, seed=5)
    drawn = sample(step, 3, START, END, wider, "cpu")
    assert drawn == sample(step, 3, START, END, wider, "cpu")
    tokens = {t for row in drawn for t in row}
    assert tokens == {A, B}  # never the end token: it is outside the kept head
