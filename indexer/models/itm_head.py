"""The image-text matching (ITM) fusion head that reranks ITC candidates, as in ALBEF/BLIP.

A dual encoder scores a caption against an image by one dot product, so it cannot tell "a red
circle left of a blue square" from "a blue circle left of a red square": both have the same
words. The head lets every text token attend to the image's patch tokens, so it can check which
colour sits on which shape where, and returns one match logit per (text, image) pair.

The head runs in two stages:

1. `ItmHead.compact_image_tokens` (at index time): patch tokens [B, P, Di] from the image tower,
   optionally average-pooled over the patch grid, projected to `ItmConfig.store_dim` and
   layer-normed, after one token made from the image's ITC embedding. The index stores these
   in fp16, `compact_token_bytes` each.
2. `ItmHead.forward` (at query time): text token features [B, T, Dt] with their padding mask,
   against the stored image tokens, through `layers` fusion blocks (self-attention over the text,
   cross-attention text -> image, MLP) to a logit read from a learned [MATCH] query.

`ItmHead.probability` maps a fused rerank score (``itm_logit + alpha * logit_scale * itc``) to
a calibrated match probability (Platt scaling fitted on held-out pairs by `fit_platt`). The
token helpers below take features from open_clip towers: `image_features_and_tokens` and
`text_features_and_tokens` return the towers' ITC embeddings and their token sequences from one
forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from indexer.errors import BadInput
from indexer.models.attention import ProbabilityTap, attend, attend_tapped, self_attention
from indexer.models.text_forward import OpenClipModel, trimmed_text_forward
from indexer.models.text_tokens import real_tokens, trim_padding


@dataclass(frozen=True)
class ItmConfig:
    """Shape of an ITM head; `text_dim`/`image_dim` are the towers' token widths."""

    text_dim: int
    image_dim: int
    grid: int  # patches per side of the image tower's grid (P = grid ** 2)
    width: int = 128
    heads: int = 4
    layers: int = 2
    mlp_ratio: float = 4.0
    embed_dim: int = 0  # > 0: the image's ITC embedding (this wide) is stored as one more token
    store_dim: int = 120  # width of the stored per-image tokens: 65 x 120 x fp16 < 16 KB
    pool: int = 1  # average-pool patches in pool x pool cells before storing (1: keep all)
    late_interaction: bool = False  # add the token-level max-sim term to the logit

    def __post_init__(self) -> None:
        if self.pool < 1 or self.grid % self.pool:
            raise BadInput(f"pool {self.pool} must divide the patch grid {self.grid}")
        if self.width % self.heads:
            raise BadInput(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def stored_tokens(self) -> int:
        return (self.grid // self.pool) ** 2 + (1 if self.embed_dim else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact_token_bytes(config: ItmConfig) -> int:
    """Bytes one image's stored tokens take in the index (fp16)."""
    return config.stored_tokens * config.store_dim * 2


class _CrossAttention(nn.Module):
    """Text -> image attention that projects each distinct image's keys and values once.

    Rerank and training score one image against several captions; `index` maps each text row
    to its image row, so the key/value projection (the head's largest cost) runs per image.
    """

    tap: ProbabilityTap | None = None  # set by `ItmHead.attention_tap` only

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # index_select, not kv[index]: its backward (index_add_) is far faster on CPU than
        # advanced indexing's (an accumulating index_put).
        k, v = self.kv(image).index_select(0, index).chunk(2, dim=-1)
        if self.tap is not None:
            return self.proj(attend_tapped(self.q(x), k, v, self.heads, self.tap))
        return self.proj(attend(self.q(x), k, v, self.heads))


class _FusionBlock(nn.Module):
    """Pre-norm block: self-attention over text, cross-attention to the image, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_cross = nn.LayerNorm(width)
        self.cross_attn = _CrossAttention(width, heads)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor, image: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        # The module's own forward would bake the example's length into an exported graph.
        x = x + self_attention(self.self_attn, self.ln_self(x), ~pad[:, None, None, :])
        x = x + self.cross_attn(self.ln_cross(x), image, index)
        return x + self.mlp(self.ln_mlp(x))


class ItmHead(nn.Module):
    """Scores (text tokens, stored image tokens) pairs with one match logit each."""

    platt: torch.Tensor
    token_text: nn.Linear  # these two with `late_interaction` only
    token_scale: nn.Parameter

    def __init__(self, config: ItmConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.image_proj = nn.Linear(c.image_dim, c.store_dim)
        self.image_norm = nn.LayerNorm(c.store_dim)
        if c.embed_dim:
            # The global embedding gives the head everything ITC knows about the image, so
            # the fused score can only gain from the patches.
            self.global_proj = nn.Linear(c.embed_dim, c.store_dim)
            self.global_norm = nn.LayerNorm(c.store_dim)
        # Position is added after the stored form: it costs nothing to store and the tower's
        # own position embedding has been mixed away by its attention layers.
        self.image_in = nn.Linear(c.store_dim, c.width)
        self.image_pos = nn.Parameter(torch.randn(c.stored_tokens, c.width) * 0.02)
        self.text_in = nn.Linear(c.text_dim, c.width)
        self.match_query = nn.Parameter(torch.randn(1, 1, c.width) * 0.02)
        self.blocks = nn.ModuleList(
            _FusionBlock(c.width, c.heads, c.mlp_ratio) for _ in range(c.layers)
        )
        self.ln_out = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, 1)
        # Token-level late interaction (FILIP/ColBERT max-sim) added to the logit: a bilinear
        # text-image term that trains from the first step, while the fusion blocks' attention
        # (which a head trained from scratch takes long to break out of uniform) catches up.
        if c.late_interaction:
            self.token_text = nn.Linear(c.width, c.width)
            self.token_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        # Platt scaling (probability = sigmoid(scale * logit + bias)); fitted after training.
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))

    def compact_image_tokens(
        self, patch_tokens: torch.Tensor, embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The per-image form the index stores: patch tokens [B, P, Di] (and, when the config
        has `embed_dim`, the ITC embedding [B, E]) -> [B, P', store_dim]."""
        c = self.config
        if c.pool > 1:
            b, p, d = patch_tokens.shape
            grid = patch_tokens.transpose(1, 2).reshape(b, d, c.grid, c.grid)
            patch_tokens = F.avg_pool2d(grid, c.pool).flatten(2).transpose(1, 2)
        tokens = self.image_norm(self.image_proj(patch_tokens))
        if not c.embed_dim:
            return tokens
        if embedding is None:
            raise BadInput("this head stores the image embedding: pass it with the patches")
        first = self.global_norm(self.global_proj(embedding.to(tokens.dtype)))
        return torch.cat([first[:, None], tokens], dim=1)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Match logits [N] for text tokens [N, T, Dt] (mask [N, T], True = real token) against
        stored image tokens [M, P', store_dim] from `compact_image_tokens` (any float dtype).

        Text row i is scored against image row `image_index[i]` (default: row i), so one image
        can be scored against many captions without repeating its tokens.
        """
        if image_index is None:
            image_index = torch.arange(text_tokens.shape[0], device=text_tokens.device)
        image = self.image_in(image_tokens.to(self.image_in.weight.dtype)) + self.image_pos
        text = self.text_in(text_tokens)
        query = self.match_query.expand(text.shape[0], -1, -1).to(text.dtype)
        x = torch.cat([query, text], dim=1)
        keep = torch.cat([torch.ones_like(text_mask[:, :1]), text_mask.bool()], dim=1)
        late = (
            self._max_sim(text, text_mask, image, image_index)
            if self.config.late_interaction
            else 0.0
        )
        for block in self.blocks:
            x = block(x, ~keep, image, image_index)
        return self.out(self.ln_out(x[:, 0])).squeeze(-1) + late

    def _max_sim(
        self, text: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """Mean over real text tokens of the best cosine with any patch, scaled."""
        t = F.normalize(self.token_text(text), dim=-1)
        i = F.normalize(image, dim=-1)
        best = torch.einsum("ntd,npd->ntp", t, i[index]).amax(dim=2)
        mask = mask.to(best.dtype)
        return self.token_scale.exp() * (best * mask).sum(1) / mask.sum(1).clamp(min=1)

    @contextmanager
    def attention_tap(self, layer: int, tap: ProbabilityTap) -> Iterator[None]:
        """Pass fusion block `layer`'s cross-attention probabilities [N, heads, 1 + T, P']
        (rows: the [MATCH] query, then the text tokens; columns: the stored image tokens)
        through `tap` inside the block, for explanations; outside it `forward` is untouched."""
        if not 0 <= layer < len(self.blocks):
            raise BadInput(f"the head has fusion layers 0..{len(self.blocks) - 1}, not {layer}")
        attention = cast(_CrossAttention, self.blocks[layer].cross_attn)
        attention.tap = tap
        try:
            yield
        finally:
            attention.tap = None

    def probability(self, fused: torch.Tensor) -> torch.Tensor:
        """Calibrated match probability for fused rerank scores (see the module docstring)."""
        scale, bias = self.platt.unbind()
        return torch.sigmoid(scale * fused.float() + bias)


def fit_platt(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (scale, bias) minimising log loss of sigmoid(scale*logit+bias) on labels.

    Fit on pairs the head was not trained on, so the probabilities are honest there.
    """
    x, y = logits.detach().double(), labels.detach().double()
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = (float(v) for v in params.detach())
    if not (math.isfinite(scale) and math.isfinite(bias)):
        return 1.0, 0.0
    return scale, bias


@contextmanager
def _tokens_on(module: Any) -> Iterator[None]:
    """Make an open_clip tower also return its tokens, for the duration of the block."""
    before = module.output_tokens
    module.output_tokens = True
    try:
        yield
    finally:
        module.output_tokens = before


def image_features_and_tokens(
    model: OpenClipModel, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITC embeddings [B, E] (unnormalised) and patch tokens [B, P, Di] from one forward pass."""
    visual = model.visual
    if not hasattr(visual, "output_tokens"):
        raise BadInput(f"image tower {type(visual).__name__} cannot return patch tokens")
    with _tokens_on(visual):
        pooled, tokens = visual(images)
    return pooled, tokens


def text_features_and_tokens(
    model: OpenClipModel, text: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ITC embeddings [B, E] (unnormalised), token features [B, T, Dt] and mask [B, T].

    For CLIP's built-in causal text tower the ids are cut after the longest caption's end
    token: under a causal mask no kept token attends to the padding, so this is exact, and
    it saves most of a 77-token context on short captions.
    """
    if hasattr(model, "text"):  # CustomTextCLIP: the tower is a TextTransformer
        with _tokens_on(model.text):
            pooled, tokens = model.text(text)
        length = tokens.shape[1]
        text = text[:, :length]
    else:
        text = trim_padding(text)
        pooled, tokens = trimmed_text_forward(model, text)
    return pooled, tokens, real_tokens(text)


def head_config_for(model: OpenClipModel, **overrides: Any) -> ItmConfig:
    """An `ItmConfig` sized to an open_clip model's towers."""
    visual = model.visual
    grid = visual.grid_size[0] if hasattr(visual, "grid_size") else None
    if grid is None:
        raise BadInput(f"image tower {type(visual).__name__} has no patch grid")
    text_width = model.text.width if hasattr(model, "text") else model.transformer.width
    settings = {"embed_dim": int(visual.output_dim), **overrides}
    return ItmConfig(
        text_dim=int(text_width),
        image_dim=int(visual.transformer.width),
        grid=int(grid),
        **settings,
    )
