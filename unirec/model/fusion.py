"""How a tower combines its feature tokens into one vector: chosen in the config."""

from __future__ import annotations

import torch
from torch import nn

from unirec.registry import Registry

FUSIONS: Registry[type] = Registry("fusion")


@FUSIONS.register("simple")
class SimpleFusion(nn.Module):
    """Concatenate the tokens, then a two-layer MLP; plus the tokens' sum as a shortcut, so
    a strong single feature (the id) reaches the output undiluted."""

    def __init__(self, n_tokens: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_tokens * dim, 2 * dim), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, dim)
        return self.mlp(tokens.flatten(1)) + tokens.sum(1)


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """A transformer over the feature tokens plus a CLS token, read at CLS: learns which
    features matter per entity; worth it with many features."""

    def __init__(self, n_tokens: int, dim: int, dropout: float, layers: int = 2) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.kind = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)  # which feature
        layer = nn.TransformerEncoderLayer(dim, nhead=4 if dim % 4 == 0 else 1,
                                           dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens + self.kind], dim=1)
        return self.out(self.encoder(x)[:, 0])
