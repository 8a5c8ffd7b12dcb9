"""The distillation losses: the student head's logits against a teacher's soft targets.

Both read a [texts, candidates] grid of logits with a mask of the real candidates (texts
have different numbers of them). `soft_bce` matches each pair's match probability on its own;
`listwise_kl` matches, per text, the teacher's softmax over its candidates (what a reranking
reads: the order and the margins inside one query's pool), and is blind to a shift of all of a
text's logits, which the Platt fit on held-out teacher scores takes care of; `mix` is their
sum: listwise's order inside a pool, with bce pinning each text's level to the teacher's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSSES = ("bce", "listwise", "mix")


def soft_bce(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the student's logits on sigmoid(teacher logits), real pairs only."""
    target = torch.sigmoid(teacher.float())
    loss = F.binary_cross_entropy_with_logits(student.float(), target, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def listwise_kl(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes over each text's real candidates, averaged
    over the texts that have at least two."""
    rows = mask.sum(dim=1) > 1
    if not rows.any():
        return student.sum() * 0.0
    hidden = ~mask.bool()
    s = (student.float() / temperature).masked_fill(hidden, -math.inf)
    t = (teacher.float() / temperature).masked_fill(hidden, -math.inf)
    log_s, log_t = F.log_softmax(s[rows], dim=1), F.log_softmax(t[rows], dim=1)
    # masked entries are -inf in both; their terms are p_t * (...) = 0 and must not be NaN
    terms = torch.where(mask[rows].bool(), log_t.exp() * (log_t - log_s), torch.zeros_like(log_s))
    return terms.sum(dim=1).mean() * temperature**2


def distil_loss(
    name: str, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The loss `name` (one of `LOSSES`) of a batch's [texts, candidates] logits."""
    if name == "bce":
        return soft_bce(student, teacher, mask)
    if name == "mix":
        return listwise_kl(student, teacher, mask) + soft_bce(student, teacher, mask)
    return listwise_kl(student, teacher, mask)
