"""The explainer: leave-one-out score deltas through the trained towers, in batches.

See ``unirec.serve.explain`` for what the numbers mean and how they add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirec.serve.recommender import Recommender
from unirec.store import Store, serving_histories
from unirec.store.layout import SIDES
from unirec.store.sql import ident

_VALUE_CHARS = 60
AFFINITY = "category_affinity"  # the item token name the affinity's term is reported as


@dataclass
class Explained:
    """Contributions for B users x K items (arrays; ``*_delta`` are score deltas)."""

    users: np.ndarray  # (B,) user indices
    items: np.ndarray  # (B, K) item indices (-1 = none)
    ranks: np.ndarray  # (B, K) each item's rank for the user (1 = first)
    score: np.ndarray  # (B, K) the served (numpy) score
    recomputed: np.ndarray  # (B, K) the same through the towers
    baseline: np.ndarray  # (B, K) every token zeroed
    interaction: np.ndarray  # (B, K) score - baseline - all feature deltas
    user_delta: np.ndarray  # (B, K, Tu)
    item_delta: np.ndarray  # (B, K, Ti)
    history: np.ndarray  # (B, L) item indices, 0 = empty slot
    history_delta: np.ndarray  # (B, K, L), NaN on empty slots
    similarity: np.ndarray  # (B, K, L), NaN on empty slots
    attention: np.ndarray | None  # (B, L) or None
    user_tokens: list[str]
    item_tokens: list[str]
    user_values: np.ndarray  # (B, Tu) each user token's raw value, short text
    item_values: np.ndarray  # (B, K, Ti)


_EXPLAINERS: dict[tuple[str, float], Explainer] = {}
# Up to this many users (items), every user's history and readable values (every item's
# values) are read once and kept, tens of MB at most: a DuckDB connection costs 40-80 ms to
# open on a busy 2-core machine, several times the towers' work for a top-10. Past it, each
# query reads what it needs through one connection.
_PRELOAD = 100_000


def explainer(store: str | Path) -> Explainer:
    """The process-wide ``Explainer`` of ``store`` (rebuilt when ``fit`` rewrites the model)."""
    weights = Path(store) / "model" / "model.safetensors"
    key = (str(weights.absolute()), weights.stat().st_mtime if weights.is_file() else 0.0)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = Explainer(store)
        _EXPLAINERS[key].preload()
    return _EXPLAINERS[key]


class Explainer:
    """The fitted towers of ``store`` (shared with cold start) plus the numpy bundle."""

    def __init__(self, store: str | Path) -> None:
        from unirec.serve.cold import cold_encoder

        self.store = Path(store)
        self.rec = Recommender.load(store)
        self.model = cold_encoder(store).model
        self.length = int(Store(store).manifest["samples"]["history_length"])
        self._item_values: np.ndarray | None = None
        self._user_values: np.ndarray | None = None
        self._histories: np.ndarray | None = None

    @torch.no_grad()
    def explain(self, users: np.ndarray, items: np.ndarray, scores: np.ndarray,
                ranks: np.ndarray | None = None) -> Explained:
        """Contributions of ``users`` (B,) indices for ``items`` (B, K) with served ``scores``
        (``ranks`` default to the items' order: a top-K list)."""
        users = np.asarray(users, np.int64)
        items = np.atleast_2d(np.asarray(items, np.int64))
        if ranks is None:
            ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
        flat_items = np.maximum(items, 0).ravel()
        if self._histories is not None and self._item_values is not None:
            hist = self._histories[users].astype(np.int64)
            user_values, item_values = self._user_values[users], self._item_values[flat_items]
        else:
            st = Store(self.store)
            with st.connect() as con:  # one connection: opening one costs tens of ms
                hist = serving_histories(st, self.length, users, con)
                user_values = self.values("user", users, con)
                item_values = self.values("item", flat_items, con)
        ut, it = self.model.user, self.model.item
        b, k = items.shape
        uidx, h = torch.from_numpy(users), torch.from_numpy(hist)
        tok = ut.tokens(ut.gather(uidx), uidx, h)  # (B, Tu, d)
        tu, d = tok.shape[1], tok.shape[2]
        uvar = ut.fuse((tok[:, None] * _masks(tu)[None, :, :, None]).flatten(0, 1))
        uvar = uvar.view(b, tu + 2, d)  # full, each token off, all off
        flat = torch.from_numpy(np.maximum(items, 0).ravel())
        itok = it.tokens(it.gather(flat), flat)  # (B*K, Ti, d)
        ti = itok.shape[1]
        ivar = it.vectors((itok[:, None] * _masks(ti)[None, :, :, None]).flatten(0, 1),
                          flat.repeat_interleave(ti + 2))  # new items: mapped (newitems)
        ivar = ivar.view(b, k, ti + 2, d)
        full = torch.einsum("bd,bkd->bk", uvar[:, 0], ivar[:, :, 0])
        user_delta = full[..., None] - torch.einsum("btd,bkd->bkt", uvar[:, 1:tu + 1],
                                                    ivar[:, :, 0])
        item_delta = full[..., None] - torch.einsum("bd,bktd->bkt", uvar[:, 0],
                                                    ivar[:, :, 1:ti + 1])
        baseline = torch.einsum("bd,bkd->bk", uvar[:, tu + 1], ivar[:, :, ti + 1])
        interaction = full - baseline - user_delta.sum(-1) - item_delta.sum(-1)
        hist_delta, attention = self._history(tok, h, ivar[:, :, 0], full)
        item_names, item_values = it.token_names, item_values.reshape(b * k, -1)
        if it.affinity is not None:  # additive: its leave-one-out delta is the term itself
            aff = self._affinity(h, flat).view(b, k)
            full = full + aff
            item_delta = torch.cat([item_delta, aff[..., None]], dim=-1)
            item_names = [*item_names, AFFINITY]
            item_values = np.concatenate([item_values, self._affinity_values(item_values)], 1)
        vec = np.asarray(self.rec.items)
        sim = np.einsum("bld,bkd->bkl", vec[hist], vec[np.maximum(items, 0)])
        sim[np.isnan(hist_delta)] = np.nan
        return Explained(
            users=users, items=items, ranks=np.asarray(ranks, np.int64),
            score=np.asarray(scores, np.float32).reshape(b, k),
            recomputed=full.numpy(), baseline=baseline.numpy(), interaction=interaction.numpy(),
            user_delta=user_delta.numpy(), item_delta=item_delta.numpy(), history=hist,
            history_delta=hist_delta, similarity=sim.astype(np.float32), attention=attention,
            user_tokens=ut.token_names, item_tokens=item_names, user_values=user_values,
            item_values=item_values.reshape(b, k, -1))

    def _affinity(self, h: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """(B*K,) the category affinity's term (``unirec.model.affinity``) of each pair."""
        it, aff = self.model.item, self.model.item.affinity
        upart = aff.user_part(h, len(h), h.device)
        ipart = aff.item_part(it.gather(flat), it.untrained(flat))
        k = len(flat) // len(h)
        return (upart.repeat_interleave(k, 0) * ipart).sum(1)

    def _affinity_values(self, item_values: np.ndarray) -> np.ndarray:
        """(B*K, 1) the affinity token's readable value: its fields' values."""
        names = self.model.item.token_names
        cols = [names.index(name) for name, _ in self.model.item.affinity.fields
                if name in names]
        out = np.empty((len(item_values), 1), object)
        out[:, 0] = ["; ".join(str(v) for v in row) for row in item_values[:, cols]]
        return out

    def _history(self, tok: torch.Tensor, h: torch.Tensor, v: torch.Tensor, full: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Leave-one-item-out over the history: (B, K, L) deltas on each item's most recent
        slot (NaN on empty slots and earlier repeats; every repeat is removed together), and
        the attention weights where the encoder has them (summed over repeats)."""
        ut = self.model.user
        b, n = h.shape
        same = (h[:, :, None] == h[:, None, :]) & (h[:, :, None] > 0)  # (B, L, L)
        later = torch.triu(same, diagonal=1).any(-1)  # an item seen again in a later slot
        hide = (h == 0) | later
        if ut.history is None:
            return np.full((b, v.shape[1], n), np.nan, np.float32), None
        drop = torch.where(same, 0, h[:, None, :])  # row l: slot l's item removed everywhere
        htok = ut.history(drop.flatten(0, 1)).view(b, n, -1)
        var = tok[:, None].repeat(1, n, 1, 1)
        var[:, :, -1] = htok  # the history token is the tower's last
        uh = ut.fuse(var.flatten(0, 1)).view(b, n, -1)
        delta = (full[..., None] - torch.einsum("bld,bkd->bkl", uh, v)).numpy()
        delta[np.broadcast_to(hide.numpy()[:, None], delta.shape)] = np.nan
        attn = ut.history.attention(h)
        if attn is None:
            return delta, None
        return delta, (same.float() * attn[:, None, :]).sum(-1).numpy()

    def histories(self, users: np.ndarray) -> np.ndarray:
        """(B, L) the serving histories of user indices (most recent last, 0 = empty)."""
        if self._histories is not None:
            return self._histories[np.asarray(users, np.int64)].astype(np.int64)
        return serving_histories(Store(self.store), self.length, np.asarray(users, np.int64))

    # ---- readable values ------------------------------------------------------------
    def values(self, side: str, idx: np.ndarray, con: Any) -> np.ndarray:
        """(n, T) short text of each token's raw value for entity indices ``idx``."""
        cached = self._item_values if side == "item" else self._user_values
        if cached is not None:
            return cached[idx]
        tower = self.model.user if side == "user" else self.model.item
        names = tower.token_names
        s = SIDES[side]
        table, id_col, map_name, index = s.table, s.id, s.map, s.index
        cols = []
        for name in names:
            if name in ("history", f"{side}_id"):
                cols.append(f"CAST(m.{id_col} AS VARCHAR)" if name != "history" else "NULL")
                continue
            group, field = name.split(".", 1)
            cols.append(f'left(CAST(r."{group}".{ident(field)} AS VARCHAR), {_VALUE_CHARS})')
        sql = (f"SELECT m.{index} AS _i, {', '.join(f'{c} AS c{j}' for j, c in enumerate(cols))}"
               f" FROM {table} r JOIN {map_name} m USING ({id_col}) "
               f"WHERE list_contains(?, m.{index})")
        uniq, inverse = np.unique(np.asarray(idx, np.int64), return_inverse=True)
        got = con.sql(sql, params=[uniq.tolist()]).fetchnumpy()
        out = np.full((len(uniq), len(names)), "", object)
        pos = np.searchsorted(uniq, np.asarray(got["_i"], np.int64))
        for j in range(len(names)):
            column = np.asarray(got[f"c{j}"], object)
            out[pos, j] = np.where(column == None, "", column)  # noqa: E711 (elementwise)
        if side == "user" and "history" in names:
            out[:, names.index("history")] = ""
        return out[inverse]

    def preload(self) -> None:
        """Read every item's values, and every user's history and values, once (up to
        ``_PRELOAD`` of each)."""
        st = Store(self.store)
        with st.connect() as con:
            if self.rec.n_items <= _PRELOAD:
                self._item_values = self.values("item", np.arange(self.rec.n_items + 1), con)
            if self.rec.n_users <= _PRELOAD:
                self._user_values = self.values("user", np.arange(self.rec.n_users + 1), con)
                self._histories = serving_histories(st, self.length, None, con).astype(np.int32)


def _masks(n: int) -> torch.Tensor:
    """(n + 2, n): keep all; each token dropped in turn; all dropped."""
    m = torch.ones(n + 2, n)
    m[torch.arange(1, n + 1), torch.arange(n)] = 0
    m[n + 1] = 0
    return m
