"""The distillation losses against their definitions, on seeded random logits."""

from __future__ import annotations

import math

import pytest
import torch

from indexer.training.distil_losses import distil_loss, listwise_kl, soft_bce


def _grid(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g) * 3
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0  # texts with fewer candidates
    mask[3, 1:] = 0  # one candidate: nothing to rank
    return student, teacher, mask


def test_listwise_is_the_kl_of_each_texts_softmax():
    student, teacher, mask = _grid(0)
    expected = []
    for row in range(3):  # row 3 has one candidate and is left out
        n = int(mask[row].sum())
        p = torch.softmax(teacher[row, :n], 0)
        expected.append(float((p * (p.log() - torch.log_softmax(student[row, :n], 0))).sum()))
    assert float(listwise_kl(student, teacher, mask)) == pytest.approx(sum(expected) / 3, rel=1e-5)


def test_listwise_ignores_padding_and_shifts():
    student, teacher, mask = _grid(1)
    padded = student.clone()
    padded[mask == 0] = 1e4  # garbage in padded cells must not matter
    base = float(listwise_kl(student, teacher, mask))
    assert float(listwise_kl(padded, teacher, mask)) == pytest.approx(base, rel=1e-6)
    assert float(listwise_kl(student + 5.0, teacher, mask)) == pytest.approx(base, rel=1e-5)
    assert float(listwise_kl(teacher, teacher, mask)) == pytest.approx(0.0, abs=1e-6)


def test_soft_bce_matches_the_teachers_probability():
    student, teacher, mask = _grid(2)
    p = torch.sigmoid(teacher)
    terms = -(
        p * torch.log(torch.sigmoid(student)) + (1 - p) * torch.log(1 - torch.sigmoid(student))
    )
    assert float(soft_bce(student, teacher, mask)) == pytest.approx(
        float((terms * mask).sum() / mask.sum()), rel=1e-5
    )
    # the student that copies the teacher is at the minimum: the teacher's own entropy
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    assert float(soft_bce(teacher, teacher, mask)) == pytest.approx(
        float((entropy * mask).sum() / mask.sum()), rel=1e-5
    )


def test_losses_train_a_student_towards_the_teacher():
    _, teacher, mask = _grid(3)
    for name in ("bce", "listwise", "mix"):
        student = torch.zeros_like(teacher, requires_grad=True)
        optimizer = torch.optim.Adam([student], lr=0.1)
        for _ in range(300):
            optimizer.zero_grad()
            distil_loss(name, student, teacher, mask).backward()
            optimizer.step()
        real = mask[:3].bool()
        top = (student.detach()[:3].masked_fill(~real, -math.inf).argmax(1),
               teacher[:3].masked_fill(~real, -math.inf).argmax(1))  # fmt: skip
        assert torch.equal(*top), name


def test_mix_is_listwise_plus_bce_and_pins_each_texts_level():
    student, teacher, mask = _grid(4)
    mixed = float(distil_loss("mix", student, teacher, mask))
    parts = float(listwise_kl(student, teacher, mask)) + float(soft_bce(student, teacher, mask))
    assert mixed == pytest.approx(parts, rel=1e-5)
    # unlike listwise alone, a shift of a text's logits costs: the level is learned too
    assert float(distil_loss("mix", student + 5.0, teacher, mask)) > mixed + 0.1
