"""The two towers: features -> tokens (encoders) -> one vector (fusion), L2-normalised.

Entity feature tensors sit on the device as buffers, so a batch is an index gather, not a
data-loader round trip. Row 0 of every table is the padding/unknown entity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unirec.config import TrainConfig
from unirec.errors import ConfigError
from unirec.model.affinity import Affinity
from unirec.model.encoders import ENCODERS, HistoryEncoder, IdEncoder, Rows, Shared
from unirec.model.fusion import FUSIONS


class Tower(nn.Module):
    """One side's features, its optional id embedding and (users) recent history."""

    def __init__(self, side: str, features: list[dict[str, Any]], table: dict[str, torch.Tensor],
                 cfg: TrainConfig, shared: Shared, ids: IdEncoder | None,
                 history: HistoryEncoder | None) -> None:
        super().__init__()
        self.side = side
        self.encoders = nn.ModuleList(ENCODERS.get(f["op"])(f, cfg.dim, shared) for f in features)
        self.columns = sorted({c for e in self.encoders for c in e.columns})
        for i, col in enumerate(self.columns):  # buffer names cannot hold dots
            self.register_buffer(f"_col{i}", table[col], persistent=False)
        self.ids = ids
        self.history = history
        n_tokens = len(self.encoders) + (ids is not None) + (history is not None)
        if n_tokens == 0:
            raise ConfigError(f"the {side} tower has no inputs: enable train.{side}_id or give "
                              f"{side}s features")
        self.fusion = FUSIONS.get(cfg.fusion)(n_tokens, cfg.dim, cfg.dropout)
        self.feature_dropout = cfg.feature_dropout if side == "item" else 0.0
        # items without a trained id: content-only vector -> the warm items' scale
        # (unirec.model.newitems); empty while training, not part of the weights
        self.register_buffer("new_map", torch.zeros(0), persistent=False)
        self.new_scale = 1.0
        # the category affinity's columns (unirec.model.affinity), installed after training
        self.affinity: Affinity | None = None

    def set_new_item_map(self, m: torch.Tensor | None, scale: float) -> None:
        """Install (or with None, remove) the new-item map ``unirec.model.newitems`` fitted."""
        self.new_map = torch.zeros(0, device=self.new_map.device) if m is None else \
            m.to(self.new_map.device)
        self.new_scale = scale

    def gather(self, idx: torch.Tensor) -> Rows:
        """Feature rows of entity indices ``idx`` (B,)."""
        return {col: getattr(self, f"_col{i}")[idx] for i, col in enumerate(self.columns)}

    def encode(self, rows: Rows, idx: torch.Tensor | None = None,
               history: torch.Tensor | None = None) -> torch.Tensor:
        """(B, dim) unit vectors from feature rows (and ids/history where the tower has them).

        ``idx`` None (a new entity, e.g. a cold-start record) skips the id embedding. With a
        new-item map installed (after training), entities without a trained id get it; with
        an affinity installed, its columns follow (``served``).
        """
        return self.served(self.vectors(self.tokens(rows, idx, history), idx), rows, idx,
                           history)

    def served(self, vectors: torch.Tensor, rows: Rows, idx: torch.Tensor | None = None,
               history: torch.Tensor | None = None) -> torch.Tensor:
        """``vectors`` (B, dim) as served: with the category affinity installed, its columns
        appended (items: nonzero only without a trained id, every row when ``idx`` is None;
        users: from ``history``). The one place they are added, so the served files, new
        records and the ONNX graphs agree."""
        if self.affinity is None:
            return vectors
        if self.side == "item":
            new = torch.ones_like(vectors[:, 0], dtype=torch.bool) if idx is None \
                else self.untrained(idx)
            part = self.affinity.item_part(rows, new)
        else:
            part = self.affinity.user_part(history, len(vectors), vectors.device)
        return torch.cat([vectors, part.to(vectors.dtype)], dim=1)

    def vectors(self, tokens: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, dim) served vectors of (B, T, dim) ``tokens``: fused to unit length, and with
        a new-item map installed, the mapped vector for rows whose entity ``idx`` has no
        trained id (every row when ``idx`` is None: new records). The one place the map is
        applied, so encode, cold-start records and explanations serve the same vector."""
        out = self.fuse(tokens)
        if not self.new_map.numel():
            return out
        mapped = apply_map(out, self.new_map, self.new_scale)
        if idx is None:
            return mapped
        return torch.where(self.untrained(idx).unsqueeze(1), mapped, out)

    def untrained(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) bool: which entities ``idx`` have no trained id (new items): the rows the
        new-item map and the affinity's item columns apply to."""
        return self.ids.trained[idx] == 0

    def tokens(self, rows: Rows, idx: torch.Tensor | None = None,
               history: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, dim): one token per input, in ``token_names`` order (explain masks them)."""
        return self.assemble([enc(rows) for enc in self.encoders], idx, history)

    def assemble(self, tokens: list[torch.Tensor], idx: torch.Tensor | None = None,
                 history: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, dim) from the features' encodings ``tokens`` (``enc(rows)`` each, not
        modified): their dropout, then the id and history tokens. Apart so that two passes
        over the same rows (the content-only loss) encode the features once; each pass still
        draws its own dropout, in the order separate passes drew it."""
        tokens = list(tokens)
        if self.training and self.feature_dropout > 0:  # each feature hidden on some rows
            tokens = [t * (torch.rand_like(t[:, :1]) >= self.feature_dropout).to(t.dtype)
                      for t in tokens]
        if self.ids is not None:
            tokens.append(self.ids(idx) if idx is not None else
                          torch.zeros_like(tokens[0]) if tokens else self._zeros(history))
        if self.history is not None:
            tokens.append(self.history(history))
        return torch.stack(tokens, dim=1)

    def fuse(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) tokens -> (B, dim) unit vectors."""
        return F.normalize(self.fusion(tokens), dim=-1)

    @property
    def token_names(self) -> list[str]:
        """What each token of ``tokens`` encodes: feature names, then ``{side}_id``, then
        ``history``."""
        return [enc.name for enc in self.encoders] + \
            ([f"{self.side}_id"] if self.ids is not None else []) + \
            (["history"] if self.history is not None else [])

    def _zeros(self, history: torch.Tensor | None) -> torch.Tensor:
        n = history.shape[0] if history is not None else 1
        return torch.zeros(n, self.ids.table.embedding_dim, device=self.ids.table.weight.device)

    def forward(self, idx: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(self.gather(idx), idx, history)


def affine(c: torch.Tensor) -> torch.Tensor:
    """``[c, 1]``: the new-item map's input (its last row is the intercept)."""
    return torch.cat([c, torch.ones_like(c[:, :1])], dim=1)


def apply_map(c: torch.Tensor, m: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, dim) content-only unit vectors -> new items' served vectors: the warm items'
    vector predicted from content (``unirec.model.newitems``), of length ``scale``."""
    p = affine(c) @ m
    return scale * p / p.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _kept_features(features: list[dict[str, Any]], drop: list[str]) -> list[dict[str, Any]]:
    """The manifest's features less those named in ``train.drop_features``."""
    known = {f"{f['side']}.{f['name']}" for f in features}
    unknown = sorted(set(drop) - known)
    if unknown:
        raise ConfigError(f"train.drop_features: no feature {unknown[0]!r} in the store; "
                          f"known: {', '.join(sorted(known))}")
    return [f for f in features if f"{f['side']}.{f['name']}" not in drop]


class TwoTower(nn.Module):
    """User tower · item tower = the cosine of a (user, item) pair; the loss divides it by
    ``train.temperature`` (``unirec.train.step``), the served scores are the plain cosine."""

    def __init__(self, manifest: dict[str, Any], users: dict[str, torch.Tensor],
                 items: dict[str, torch.Tensor], text: torch.Tensor | None,
                 image: torch.Tensor | None, user_trained: torch.Tensor,
                 cfg: TrainConfig) -> None:
        super().__init__()
        n_items = items["_index"].shape[0]
        n_users = users["_index"].shape[0]
        self.item_table = nn.Embedding(n_items, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_table.weight, std=0.05)
        with torch.no_grad():
            self.item_table.weight[0].zero_()
        shared = Shared(text, image, self.item_table, cfg.content_projection)
        feats = _kept_features(manifest["features"], cfg.drop_features)
        user_ids = item_ids = None
        if cfg.user_id:
            self.user_table = nn.Embedding(n_users, cfg.dim, padding_idx=0)
            nn.init.normal_(self.user_table.weight, std=0.05)
            user_ids = IdEncoder(self.user_table, user_trained, cfg.id_dropout)
        if cfg.item_id:
            item_ids = IdEncoder(self.item_table, items["popularity"] > 0, cfg.id_dropout)
        history = None
        if cfg.history != "none":
            history = HistoryEncoder(self.item_table, manifest["samples"]["history_length"],
                                     cfg.dim, cfg.history, cfg.dropout)
        self.user = Tower("user", [f for f in feats if f["side"] == "user"], users, cfg,
                          shared, user_ids, history)
        self.item = Tower("item", [f for f in feats if f["side"] == "item"], items, cfg,
                          shared, item_ids, None)
        self.shared = shared

    def set_affinity(self, affinity: Affinity | None) -> None:
        """Install (or with None, remove) the category affinity in both towers."""
        self.user.affinity = affinity
        self.item.affinity = affinity

    @property
    def served_dim(self) -> int:
        """Width of the served vectors: ``train.dim`` plus the affinity's columns."""
        extra = self.item.affinity.width if self.item.affinity is not None else 0
        return int(self.item_table.embedding_dim) + extra

    def forward(self, user: torch.Tensor, history: torch.Tensor, item: torch.Tensor,
                negatives: torch.Tensor | None, content: bool = False, distinct: bool = False
                ) -> tuple[torch.Tensor, ...]:
        """Unit vectors of the users, their positive items and the sampled negatives; with
        ``content``, also the items' content-only vectors (ids hidden, as for a new item).

        ``distinct``: ``item`` are the step's distinct candidates (``negatives`` unused):
        (users, their vectors[, content-only vectors]), for the compact softmax."""
        if distinct:
            # the items first, then the users, then content: the random draws' order of the
            # expanded form below, so both train alike
            feats = [enc(self.item.gather(item)) for enc in self.item.encoders]
            vecs = self.item.fuse(self.item.assemble(feats, item))
            out = (self.user(user, history), vecs)
            return (*out, self.item.fuse(self.item.assemble(feats, None))) if content else out
        # one item-tower pass over the step's distinct candidates (positives and negatives
        # repeat: popular items many times a batch), then index back. index_select, not
        # x[slot]: the latter's backward (index_put_ accumulate) adds with unordered parallel
        # atomics on CPU, so runs (and fit --resume) would differ in the last bits
        distinct, slot = torch.unique(torch.cat([item, negatives]), return_inverse=True)
        rows = self.item.gather(distinct)
        items = self.item.encode(rows, distinct).index_select(0, slot)
        out = (self.user(user, history), items[: len(item)], items[len(item):])
        if not content:
            return out
        plain = self.item.encode(rows, None).index_select(0, slot)
        return (*out, plain[: len(item)], plain[len(item):])
