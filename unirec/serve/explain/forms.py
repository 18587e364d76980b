"""Explanations as long rows (CLI, CSV, the ``explanations`` table) and as nested dicts
(Python, HTTP)."""

from __future__ import annotations

from typing import Any

import numpy as np

from unirec.serve.explain.core import Explained
from unirec.serve.recommender import Recommender

KINDS = ("history", "user_feature", "item_feature")
COLUMNS = ("user_id", "rank", "item_id", "score", "kind", "name", "value", "contribution",
           "similarity", "attention")


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
