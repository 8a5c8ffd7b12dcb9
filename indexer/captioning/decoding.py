"""photoseek's own decode loop for captioners that give next-token logits (open_clip's CoCa):
greedy, top-k and top-p sampling, and beam search, with no transformers generation classes.

open_clip 3.3.0's `CoCa.generate` imports `BeamSearchScorer`, which transformers 5 removed
(open_clip #1129), so it is switched off there; this loop calls only the model's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from indexer.captioning.protocol import Generation

if TYPE_CHECKING:
    import torch

# tokens [B, L] -> the logits [B, V] of the token after each row's last one
Step = Callable[["torch.Tensor"], "torch.Tensor"]


def sample(
    step: Step, batch: int, start: int, end: int, settings: Generation, device: str
) -> list[list[int]]:
    """The tokens of each caption (start and end tokens left out), `batch` at once, greedy
    or sampled as `settings` say (beam search is `beam_search`, one image at a time)."""
    import torch

    tokens = torch.full((batch, 1), start, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    while tokens.shape[1] < settings.max_tokens and not bool(done.all()):
        logits = _allowed(step(tokens).float(), tokens.shape[1], end, settings)
        chosen = _pick(logits, settings, generator)
        # a finished row goes on with end tokens: causal attention keeps them from its caption
        chosen = torch.where(done, torch.full_like(chosen, end), chosen)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        done |= chosen == end
    return [_caption(row, end) for row in tokens[:, 1:].tolist()]


def _allowed(logits: torch.Tensor, length: int, end: int, settings: Generation) -> torch.Tensor:
    if length < settings.min_tokens:
        logits[:, end] = float("-inf")
    return logits


def _pick(logits: torch.Tensor, settings: Generation, generator: torch.Generator) -> torch.Tensor:
    import torch

    if settings.mode == "greedy":
        return logits.argmax(dim=-1)
    logits = logits / settings.temperature
    if settings.mode == "top_k":
        ranked, order = torch.topk(logits, min(settings.top_k, logits.shape[-1]), dim=-1)
        probs = ranked.softmax(dim=-1)
    else:
        ranked, order = torch.sort(logits, dim=-1, descending=True)
        probs = ranked.softmax(dim=-1)
        # the smallest head whose mass reaches top_p (its first token always)
        probs = probs * ((probs.cumsum(dim=-1) - probs) < settings.top_p)
    # inverse-CDF draw among the candidates: torch.multinomial is far slower on a CLIP-sized
    # vocabulary, and this is as reproducible with a seeded generator
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    chosen = (cdf <= u).sum(dim=-1).clamp(max=probs.shape[-1] - 1)
    return order.gather(-1, chosen[:, None])[:, 0]


def beam_search(step: Step, start: int, end: int, settings: Generation, device: str) -> list[int]:
    """Beam search over one image (`step` takes the beams as its rows): the finished caption
    with the best mean log-probability per token (transformers' length_penalty 1), or the best
    unfinished one at the length cap. One beam is greedy decoding."""
    import torch

    beams: list[tuple[list[int], float]] = [([start], 0.0)]
    finished: list[tuple[list[int], float]] = []
    while beams and len(beams[0][0]) < settings.max_tokens and len(finished) < settings.beams:
        tokens = torch.tensor([b for b, _ in beams], dtype=torch.long, device=device)
        logits = _allowed(step(tokens).float(), tokens.shape[1], end, settings)
        so_far = torch.tensor([score for _, score in beams], device=device)
        scores = logits.log_softmax(dim=-1) + so_far[:, None]
        top = torch.topk(scores.flatten(), min(2 * settings.beams, scores.numel()))
        width = scores.shape[-1]
        grown: list[tuple[list[int], float]] = []
        for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            prefix, token = beams[flat // width][0], flat % width
            (finished if token == end else grown).append((prefix + [token], score))
            if len(grown) == settings.beams:
                break
        beams = grown
    pool = finished or beams
    best = max(pool, key=lambda b: b[1] / (len(b[0]) - 1))
    return _caption(best[0][1:], end)


def _caption(tokens: list[int], end: int) -> list[int]:
    return tokens[: tokens.index(end)] if end in tokens else tokens
