"""The ranker's networks: interaction models in a registry, and the net around them.

Why a second model at all: retrieval scores a pair by a dot product of two vectors computed
apart, so a user feature can never meet an item feature (country x weather, age x audience).
The ranker sees the pair: each side's tower tokens (projected to ``rank.dim``), plus a pair
token from the retrieval score and the elementwise product of the two tower vectors, go
through an interaction model (``INTERACTIONS``) into one vector that every head reads.

Everything here is ReLU, LayerNorm and matrix products on purpose: ``unirec.model.ranker``
mirrors it in numpy, so serving needs no torch. A custom interaction model registers with
``@unirec.register_interaction("name")``: a module built as ``cls(n_tokens, dim, cfg)`` with
an ``out_dim`` attribute, mapping (N, n_tokens, dim) tokens to (N, out_dim).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from unirec.config import RankConfig
from unirec.registry import Registry

INTERACTIONS: Registry[type] = Registry("interaction model", "unirec.interactions")


def register_interaction(name: str, cls: type | None = None, *, replace: bool = False):
    """``@register_interaction("name")`` on an ``nn.Module`` class (see the module doc)."""
    return INTERACTIONS.register(name, cls, replace=replace)


def _mlp(width: int, cfg: RankConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                         nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU())


@register_interaction("dcn")
class CrossNetwork(nn.Module):
    """DCN-v2 (Wang et al., 2021), low-rank: ``x_{l+1} = x0 * V(U x_l) + x_l`` over the
    concatenated tokens, then an MLP. Each cross layer adds one degree of explicit feature
    crossing (country token x weather token), which an MLP finds only slowly."""

    def __init__(self, n_tokens: int, dim: int, cfg: RankConfig) -> None:
        super().__init__()
        width = n_tokens * dim
        rank = min(32, width)
        self.down = nn.ModuleList(nn.Linear(width, rank, bias=False) for _ in range(cfg.layers))
        self.up = nn.ModuleList(nn.Linear(rank, width) for _ in range(cfg.layers))
        self.mlp = _mlp(width, cfg)
        self.out_dim = cfg.hidden

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x0 = x = tokens.flatten(1)
        for down, up in zip(self.down, self.up, strict=True):
            x = x0 * up(down(x)) + x
        return self.mlp(x)


class Block(nn.Module):
    """Pre-norm self-attention + ReLU feed-forward (written out, so numpy can mirror it)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, t, 3, self.heads, d // self.heads).unbind(2)
        att = torch.einsum("nqhe,nkhe->nhqk", q, k) / (d // self.heads) ** 0.5
        y = torch.einsum("nhqk,nkhe->nqhe", att.softmax(-1), v).reshape(n, t, d)
        x = x + self.proj(y)
        return x + self.ff2(torch.relu(self.ff1(self.ln2(x))))


@register_interaction("transformer")
class TokenTransformer(nn.Module):
    """Self-attention over [CLS, user tokens, item tokens, pair token], read at CLS: every
    user token can attend to every item token."""

    def __init__(self, n_tokens: int, dim: int, cfg: RankConfig) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        heads = 2 if dim % 2 == 0 else 1
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU())
        self.out_dim = cfg.hidden

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, 0]))


class RankNet(nn.Module):
    """Projected user tokens + item tokens + a pair token -> interaction model -> heads.

    ``user_part`` / ``item_part`` depend on one side only, so serving precomputes them per
    user and per item; only the pair token and what follows run per candidate.
    """

    def __init__(self, n_user_tokens: int, n_item_tokens: int, tower_dim: int,
                 cfg: RankConfig, n_types: int, score_init: float = 1.0,
                 keep: tuple[list[bool], list[bool]] | None = None) -> None:
        super().__init__()
        h = cfg.dim
        # which user/item tokens the ranker reads (train.rank.ids False: not the id tokens)
        users, items = keep or ([True] * n_user_tokens, [True] * n_item_tokens)
        self.register_buffer("user_keep", torch.tensor(users, dtype=torch.float32)[:, None])
        self.register_buffer("item_keep", torch.tensor(items, dtype=torch.float32)[:, None])
        # the ranking logit is a residual over retrieval: score_scale x the retrieval score
        # (initialised at 1 / train.temperature, retrieval's own logit) plus what the
        # interaction model adds, so training starts from retrieval's order and learns
        # corrections rather than rediscovering it
        self.score_scale = nn.Parameter(torch.tensor(float(score_init)))
        self.user_proj, self.item_proj = nn.Linear(tower_dim, h), nn.Linear(tower_dim, h)
        self.user_slot = nn.Parameter(torch.randn(n_user_tokens, h) * 0.02)
        self.item_slot = nn.Parameter(torch.randn(n_item_tokens, h) * 0.02)
        self.pair = nn.Linear(tower_dim + 1, h)
        self.body = INTERACTIONS.get(cfg.model)(n_user_tokens + n_item_tokens + 1, h, cfg)
        out = int(self.body.out_dim)
        self.heads = nn.ModuleDict({"rank": nn.Linear(out, 1)})
        for name in cfg.heads:
            self.heads[name] = nn.Linear(out, max(n_types, 1) if name == "interaction_type"
                                         else 1)

    def user_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., Tu, tower_dim) -> (..., Tu, dim)."""
        return self.user_proj(tokens * self.user_keep) + self.user_slot

    def item_part(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., Ti, tower_dim) -> (..., Ti, dim)."""
        return self.item_proj(tokens * self.item_keep) + self.item_slot

    def forward(self, user_part: torch.Tensor, item_part: torch.Tensor, u: torch.Tensor,
                v: torch.Tensor, score: torch.Tensor) -> dict[str, torch.Tensor]:
        """``user_part`` (B, Tu, h), ``item_part`` (B, C, Ti, h), ``u`` (B, d) and ``v``
        (B, C, d) the towers' unit vectors, ``score`` (B, C) retrieval scores -> each head's
        (B, C, out) output."""
        b, c = score.shape
        pair = self.pair(torch.cat([u.unsqueeze(1) * v, score.unsqueeze(-1)], -1))
        tokens = torch.cat([user_part.unsqueeze(1).expand(b, c, -1, -1), item_part,
                            pair.unsqueeze(2)], dim=2)
        hidden = self.body(tokens.flatten(0, 1))
        out = {name: head(hidden).view(b, c, -1) for name, head in self.heads.items()}
        out["rank"] = out["rank"] + self.score_scale * score.unsqueeze(-1)
        return out


def torch_body(meta: dict[str, Any], body_w: dict[str, np.ndarray]) -> Any:
    """A custom interaction model with no numpy forward, as a numpy-in, numpy-out function
    over its torch module (``unirec.model.ranker.Ranker`` calls it)."""
    module = INTERACTIONS.get(meta["model"])(meta["n_tokens"], meta["config"]["dim"],
                                             RankConfig(**meta["config"]))
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in body_w.items()})
    module.eval()

    def run(_: Any, tokens: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(tokens))).numpy()

    return run
