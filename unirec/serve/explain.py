"""Why an item is recommended: per-item contributions through the trained towers.

A recommendation's score is ``cos(u, v)``: ``u`` the user tower's vector (features, id and
recent history, fused), ``v`` the item tower's. For each recommended item this module says

- **history**: which of the user's recent items pull it up most. ``contribution`` is the
  leave-one-out delta: the score minus the score with that item removed from the history
  (every occurrence; the history encoder re-run without it). ``similarity`` is the plain
  dot-product view, the cosine of the history item's vector and the recommended item's
  (numpy, from the bundle), and ``attention`` the history encoder's attention weight on it
  (``attention`` mode only).
- **features** (``user_feature`` / ``item_feature``): which feature tokens matter most.
  ``contribution`` is the leave-one-token-out delta: the score minus the score with that
  token zeroed before fusion. A zeroed categorical token is exactly what a missing value
  (vocabulary index 0) encodes, so for those the delta is "what this value adds".

How the deltas relate to the score (checked by the tests; ``explain``'s dicts carry every
term, the long rows of the CLI and the ``explanations`` table the ``--top`` largest): with
``baseline`` the score with every token of both towers zeroed,

    score == baseline + sum(user_feature deltas) + sum(item_feature deltas) + interaction

where ``interaction`` is what the fusion's non-linearity does beyond one-at-a-time effects
(zero for a linear fusion). ``recomputed`` is the score the towers give here; it equals the
served numpy score (``score``) up to float rounding, which is what ties an explanation to
the answer it explains.

Ranking stage: unirec has none yet (retrieval only). When one lands, its contribution goes
next to these as ``ranker_feature`` rows and a ``ranking`` entry in ``explain_items``'s
dicts (now always None): the retrieval part here does not change.

This imports torch (the towers); the known-user ``recommend`` path never does. Cost: one
batched pass per user of (tokens + 2 + history length) user-tower fusions and, per item,
(tokens + 2) item-tower fusions; see ``bench/serve_speed.py``'s explain step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirec.errors import QueryError
from unirec.featurize.ops.base import SIDES
from unirec.serve.recommender import Recommender
from unirec.store import Store
from unirec.train.inputs import serving_histories

KINDS = ("history", "user_feature", "item_feature")
COLUMNS = ("user_id", "rank", "item_id", "score", "kind", "name", "value", "contribution",
           "similarity", "attention")
_VALUE_CHARS = 60


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
        ivar = it.fuse((itok[:, None] * _masks(ti)[None, :, :, None]).flatten(0, 1))
        ivar = ivar.view(b, k, ti + 2, d)
        full = torch.einsum("bd,bkd->bk", uvar[:, 0], ivar[:, :, 0])
        user_delta = full[..., None] - torch.einsum("btd,bkd->bkt", uvar[:, 1:tu + 1],
                                                    ivar[:, :, 0])
        item_delta = full[..., None] - torch.einsum("bd,bktd->bkt", uvar[:, 0],
                                                    ivar[:, :, 1:ti + 1])
        baseline = torch.einsum("bd,bkd->bk", uvar[:, tu + 1], ivar[:, :, ti + 1])
        interaction = full - baseline - user_delta.sum(-1) - item_delta.sum(-1)
        hist_delta, attention = self._history(tok, h, ivar[:, :, 0], full)
        vec = np.asarray(self.rec.items)
        sim = np.einsum("bld,bkd->bkl", vec[hist], vec[np.maximum(items, 0)])
        sim[np.isnan(hist_delta)] = np.nan
        return Explained(
            users=users, items=items, ranks=np.asarray(ranks, np.int64),
            score=np.asarray(scores, np.float32).reshape(b, k),
            recomputed=full.numpy(), baseline=baseline.numpy(), interaction=interaction.numpy(),
            user_delta=user_delta.numpy(), item_delta=item_delta.numpy(), history=hist,
            history_delta=hist_delta, similarity=sim.astype(np.float32), attention=attention,
            user_tokens=ut.token_names, item_tokens=it.token_names, user_values=user_values,
            item_values=item_values.reshape(b, k, -1))

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

    # ---- readable values ------------------------------------------------------------
    def values(self, side: str, idx: np.ndarray, con: Any) -> np.ndarray:
        """(n, T) short text of each token's raw value for entity indices ``idx``."""
        cached = self._item_values if side == "item" else self._user_values
        if cached is not None:
            return cached[idx]
        tower = self.model.user if side == "user" else self.model.item
        names = tower.token_names
        table, id_col, map_name, index = SIDES[side]
        cols = []
        for name in names:
            if name in ("history", f"{side}_id"):
                cols.append(f"CAST(m.{id_col} AS VARCHAR)" if name != "history" else "NULL")
                continue
            group, field = name.split(".", 1)
            field = field.replace('"', '""')
            cols.append(f'left(CAST(r."{group}"."{field}" AS VARCHAR), {_VALUE_CHARS})')
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


def _top(values: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
    """(..., n) positions of the ``n`` largest ``key`` (NaN last), stable by position."""
    order = np.argsort(-np.nan_to_num(key, nan=-np.inf), axis=-1, kind="stable")
    return order[..., :n]


def rows(ex: Explained, rec: Recommender, top: int = 3) -> dict[str, np.ndarray]:
    """Long rows (``COLUMNS``): per (user, item), the ``top`` history items by delta and the
    ``top`` user and item feature tokens by |delta|. Vectorized over users and items."""
    b, k = ex.items.shape
    valid = ex.items > 0
    parts = []
    # history: largest positive pull first; empty slots never shown
    pos = _top(ex.history_delta, top, ex.history_delta)  # (B, K, n)
    hist_items = np.take_along_axis(np.broadcast_to(ex.history[:, None], ex.history_delta.shape),
                                    pos, -1)
    delta = np.take_along_axis(ex.history_delta, pos, -1)
    keep = valid[..., None] & (hist_items > 0) & ~np.isnan(delta)
    attn = np.take_along_axis(np.broadcast_to(ex.attention[:, None], ex.history_delta.shape),
                              pos, -1) \
        if ex.attention is not None else np.full(delta.shape, np.nan, np.float32)
    titles = _titles(rec, hist_items)
    parts.append((0, pos, keep, rec.item_ids(hist_items).astype(str), titles, delta,
                  np.take_along_axis(ex.similarity, pos, -1), attn))
    user_vals, item_vals = ex.user_values, ex.item_values
    for kind, deltas, names, vals in (
            (1, ex.user_delta, ex.user_tokens, np.broadcast_to(
                user_vals[:, None], (b, k, user_vals.shape[1]))),
            (2, ex.item_delta, ex.item_tokens, item_vals)):
        pos = _top(deltas, top, np.abs(deltas))
        keep = np.broadcast_to(valid[..., None], pos.shape)
        nan = np.full(pos.shape, np.nan, np.float32)
        parts.append((kind, pos, keep, np.asarray(names, object)[pos],
                      np.take_along_axis(vals, pos, -1), np.take_along_axis(deltas, pos, -1),
                      nan, nan))
    bb, kk = np.meshgrid(np.arange(b), np.arange(k), indexing="ij")
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("_b", "_k", "_kind", "_slot", "name",
                                                          "value", "contribution",
                                                          "similarity", "attention")}
    for kind, pos, keep, names, vals, delta, sim, att in parts:
        slot = np.broadcast_to(np.arange(pos.shape[-1]), pos.shape)
        for col, arr in (("_b", np.broadcast_to(bb[..., None], pos.shape)),
                         ("_k", np.broadcast_to(kk[..., None], pos.shape)),
                         ("_kind", np.full(pos.shape, kind)), ("_slot", slot), ("name", names),
                         ("value", vals), ("contribution", delta), ("similarity", sim),
                         ("attention", att)):
            cols[col].append(np.asarray(arr)[keep])
    flat = {c: np.concatenate(v) for c, v in cols.items()}
    order = np.lexsort((flat["_slot"], flat["_kind"], flat["_k"], flat["_b"]))
    flat = {c: v[order] for c, v in flat.items()}
    bi, ki = flat["_b"], flat["_k"]
    return {
        "user_id": rec.user_ids(ex.users[bi]), "rank": ex.ranks[bi, ki],
        "item_id": rec.item_ids(ex.items[bi, ki]),
        "score": ex.score[bi, ki], "kind": np.asarray(KINDS, object)[flat["_kind"]],
        "name": flat["name"].astype(object), "value": flat["value"].astype(object),
        "contribution": flat["contribution"].astype(np.float32),
        "similarity": flat["similarity"].astype(np.float32),
        "attention": flat["attention"].astype(np.float32)}


def _titles(rec: Recommender, idx: np.ndarray) -> np.ndarray:
    """Titles of item indices of any shape ('' without a title field)."""
    if not rec.title_field:
        return np.full(idx.shape, "", object)
    uniq, inverse = np.unique(np.maximum(idx, 0), return_inverse=True)
    return np.asarray(rec.titles(uniq), object)[inverse].reshape(idx.shape)


def nested(ex: Explained, rec: Recommender) -> list[list[dict[str, Any]]]:
    """Every contribution, per user then per item, as JSON-ready dicts (the HTTP/Python form):
    history sorted by delta, features by |delta|, plus ``baseline``, ``interaction`` and
    ``recomputed`` (see the module docstring for how they add up)."""
    user_vals, item_vals = ex.user_values, ex.item_values
    out = []
    for b in range(len(ex.users)):
        hist = ex.history[b]
        slots = np.flatnonzero(~np.isnan(ex.history_delta[b, 0]))
        titles = _titles(rec, hist[slots])
        hist_ids = rec.item_ids(hist[slots])
        per_user = []
        for k in np.flatnonzero(ex.items[b] > 0):
            history = [{"item_id": _plain(hist_ids[j]), "title": titles[j],
                        "contribution": float(ex.history_delta[b, k, s]),
                        "similarity": float(ex.similarity[b, k, s]),
                        "attention": None if ex.attention is None
                        else float(ex.attention[b, s])} for j, s in enumerate(slots)]
            history.sort(key=lambda r: -r["contribution"])
            per_user.append({
                "item_id": _plain(rec.item_ids(ex.items[b, k:k + 1])[0]),
                "rank": int(ex.ranks[b, k]),
                "score": float(ex.score[b, k]), "recomputed": float(ex.recomputed[b, k]),
                "baseline": float(ex.baseline[b, k]),
                "interaction": float(ex.interaction[b, k]), "history": history,
                "user_features": _features(ex.user_tokens, ex.user_delta[b, k], user_vals[b]),
                "item_features": _features(ex.item_tokens, ex.item_delta[b, k],
                                           item_vals[b, k]),
                "ranking": None})
        out.append(per_user)
    return out


def _features(names: list[str], delta: np.ndarray, values: np.ndarray) -> list[dict[str, Any]]:
    order = np.argsort(-np.abs(delta), kind="stable")
    return [{"name": names[t], "value": values[t], "contribution": float(delta[t])}
            for t in order]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _rank_of(rec: Recommender, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``items`` for ``user`` (as served) and their ranks in the user's full ranking
    with seen items left out (a seen item is ranked as if it were not): 1 + the unseen items
    that score higher."""
    scores = rec.items @ rec.users[user]  # the product recommend computes, bit for bit
    mine = scores[items].astype(np.float32)
    scores[0] = -np.inf
    scores[rec.seen(np.array([user]))[1]] = -np.inf
    return mine, 1 + (scores[None, :] > mine[:, None]).sum(1)


def explain(user: Any, items: list[Any] | None = None, k: int = 10, *,
            store: str | Path = "unirec-store", exclude_seen: bool = True
            ) -> list[dict[str, Any]]:
    """Why ``items`` (by default: ``user``'s top-``k``) are recommended to ``user``.

    One dict per item, best first: ``score`` (as served), ``history`` (each recent item's
    leave-one-out ``contribution``, ``similarity`` and ``attention``), ``user_features`` and
    ``item_features`` (leave-one-token-out ``contribution``), ``baseline``, ``interaction``,
    ``recomputed`` and ``ranking`` (None: no ranking stage yet). See the module docstring.
    """
    ex, users, idx, scores, ranks = _query(store, [user], items, k, exclude_seen)
    return nested(ex.explain(users, idx, scores, ranks), ex.rec)[0]


def explain_rows(users: list[Any], items: list[Any] | None = None, k: int = 10, top: int = 3,
                 *, store: str | Path = "unirec-store", exclude_seen: bool = True
                 ) -> dict[str, np.ndarray]:
    """``explain`` for several users as long rows (``COLUMNS``): what the CLI prints and the
    ``explanations`` table holds."""
    ex, u, idx, scores, ranks = _query(store, users, items, k, exclude_seen)
    return rows(ex.explain(u, idx, scores, ranks), ex.rec, top)


def _query(store: str | Path, users: list[Any], items: list[Any] | None, k: int,
           exclude_seen: bool) -> tuple[Explainer, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray]:
    from unirec.serve.api import _unknown_message

    ex = explainer(store)
    rec = ex.rec
    index = rec.user_index(list(users))
    if (index < 0).any():
        raise QueryError(_unknown_message(rec, users[int(np.argmax(index < 0))]))
    if items is None:
        idx, scores = rec.recommend_index(index, k, exclude_seen=exclude_seen)
        return ex, index, idx, scores, np.broadcast_to(np.arange(1, k + 1), idx.shape)
    item_idx = rec.item_index(list(items))
    scores, ranks = map(np.stack, zip(*(_rank_of(rec, int(u), item_idx) for u in index),
                                      strict=True))
    return ex, index, np.broadcast_to(item_idx, scores.shape), scores, ranks


def blocks(store: str | Path, k: int = 10, top: int = 3, *, exclude_seen: bool = True,
           chunk: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Every user's top-``k`` explained, ``chunk`` users at a time (``rows`` columns)."""
    ex = explainer(store)
    rec = ex.rec
    for lo in range(1, rec.n_users + 1, chunk):
        users = np.arange(lo, min(lo + chunk, rec.n_users + 1))
        idx, scores = rec.recommend_index(users, k, exclude_seen=exclude_seen)
        yield rows(ex.explain(users, idx, scores), rec, top)


def write_explanations(store: str | Path, k: int = 10, top: int = 3, *,
                       exclude_seen: bool = True) -> int:
    """Every user's top-``k`` explained into the store's ``explanations`` table (``COLUMNS``,
    the rows ``unirec explain`` prints); returns the row count.

    Blocks of users stream into a Parquet file beside the database first: explaining reads
    the store, and DuckDB refuses a read connection while the writer's is open.
    """
    import tempfile

    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from unirec.store import write_table

    with tempfile.TemporaryDirectory(dir=store, prefix=".explanations-") as tmp:
        path = Path(tmp) / "rows.parquet"
        writer = None
        try:
            for block in blocks(store, k, top, exclude_seen=exclude_seen):
                batch = pa.RecordBatch.from_pydict(block, schema=writer.schema if writer
                                                   else None)
                writer = writer or pq.ParquetWriter(str(path), batch.schema)
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
        return write_table(store, "explanations", pads.dataset(str(path)),
                           "SELECT * FROM _new ORDER BY user_id, rank, kind, "
                           "contribution DESC")
