"""The ranking stage's serving form, in numpy: no torch on the known-user path.

``fit`` leaves the ranker in ``model/rank/``: ``rank.json`` (settings, head statistics, the
validation figures and whether ``auto`` kept it), ``weights.npz`` (the net's parameters by
their torch names) and ``user_part.npy`` / ``item_part.npy``, each entity's projected tower
tokens (users with their latest history), computed once so a query pays only for the pair
token and the interaction model over its candidates. With ``train.rank.rescore`` it also
holds ``rescore_user.npy`` / ``rescore_item.npy``, the served vectors of a second two-tower
trained for items people met, whose scores re-order those candidates (``rescore_blend``).
The forwards below mirror ``unirec.model.interactions`` op for op; a test holds them to
torch's scores within 1e-5.

Here (``unirec.model``), not in ``serve``, because ``train`` validates with the very same
blend and ordering (``blend``, ``top_by``) and writes the folder (``RankResult``). A custom
interaction model without a numpy forward here (``NUMPY_INTERACTIONS``) runs its torch
module instead (``unirec.model.interactions.torch_body``), so that path imports torch.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import StoreError
from unirec.registry import Registry

RANK_DIR = "rank"
FORMAT = "unirec-rank/1"
Weights = dict[str, np.ndarray]
NUMPY_INTERACTIONS: Registry[Callable[[Weights, np.ndarray], np.ndarray]] = \
    Registry("numpy interaction model")


def _linear(w: Weights, name: str, x: np.ndarray) -> np.ndarray:
    y = x @ w[f"{name}.weight"].T
    bias = w.get(f"{name}.bias")
    return y + bias if bias is not None else y


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _layer_norm(w: Weights, name: str, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _mlp(w: Weights, name: str, x: np.ndarray) -> np.ndarray:
    """``models._mlp``: Linear, ReLU, Dropout (identity), Linear, ReLU."""
    return _relu(_linear(w, f"{name}.3", _relu(_linear(w, f"{name}.0", x))))


@NUMPY_INTERACTIONS.register("dcn")
def cross_network(w: Weights, tokens: np.ndarray) -> np.ndarray:
    """``models.CrossNetwork``."""
    x0 = x = tokens.reshape(len(tokens), -1)
    layer = 0
    while f"down.{layer}.weight" in w:
        x = x0 * _linear(w, f"up.{layer}", _linear(w, f"down.{layer}", x)) + x
        layer += 1
    return _mlp(w, "mlp", x)


def _block(w: Weights, name: str, x: np.ndarray, heads: int) -> np.ndarray:
    n, t, d = x.shape
    e = d // heads
    qkv = _linear(w, f"{name}.qkv", _layer_norm(w, f"{name}.ln1", x)).reshape(n, t, 3, heads, e)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    att = _softmax(np.einsum("nqhe,nkhe->nhqk", q, k) / np.float32(e ** 0.5))
    y = np.einsum("nhqk,nkhe->nqhe", att, v).reshape(n, t, d)
    x = x + _linear(w, f"{name}.proj", y)
    return x + _linear(w, f"{name}.ff2",
                       _relu(_linear(w, f"{name}.ff1", _layer_norm(w, f"{name}.ln2", x))))


@NUMPY_INTERACTIONS.register("transformer")
def token_transformer(w: Weights, tokens: np.ndarray) -> np.ndarray:
    """``models.TokenTransformer``."""
    d = tokens.shape[-1]
    heads = 2 if d % 2 == 0 else 1
    x = np.concatenate([np.broadcast_to(w["cls"], (len(tokens), 1, d)), tokens], axis=1)
    layer = 0
    while f"blocks.{layer}.qkv.weight" in w:
        x = _block(w, f"blocks.{layer}", x, heads)
        layer += 1
    return _relu(_linear(w, "out.0", _layer_norm(w, "norm", x[:, 0])))


def blend(outputs: dict[str, np.ndarray], score: np.ndarray, meta: dict[str, Any]
          ) -> np.ndarray:
    """The served score (``train.rank.blend``): the ranking logit plus weighted terms."""
    out = outputs["rank"][..., 0].astype(np.float64)
    stats = meta.get("stats", {})
    for term, weight in meta["config"]["blend"].items():
        if term == "retrieval":
            out = out + weight * score
        elif term in ("rating", "weight"):
            mean, std = stats[term]
            out = out + weight * (mean + std * outputs[term][..., 0])
        else:  # interaction_type:TYPE
            probs = _softmax(outputs["interaction_type"].astype(np.float64))
            out = out + weight * probs[..., meta["type_names"].index(term.split(":", 1)[1])]
    return out


def rescore_blend(base: np.ndarray, rescore: np.ndarray, valid: np.ndarray, weight: float
                  ) -> np.ndarray:
    """``(1 - weight) z(base) + weight z(rescore)`` over (n, C) candidates, each score
    standardised over a user's ``valid`` ones: the two models' scales differ (a ranking
    logit or a cosine against a cosine at another temperature), their orders are what
    count. Invalid slots get 0 (``top_by`` puts padding last anyway)."""
    def z(x: np.ndarray) -> np.ndarray:
        x = np.where(valid, np.asarray(x, np.float64), 0.0)
        n = np.maximum(valid.sum(1, keepdims=True), 1)
        mean = x.sum(1, keepdims=True) / n
        std = np.sqrt((np.where(valid, x - mean, 0.0) ** 2).sum(1, keepdims=True) / n)
        return np.where(valid, (x - mean) / np.maximum(std, 1e-12), 0.0)
    return (1.0 - weight) * z(base) + weight * z(rescore)


class Ranker:
    """A fitted ranker: ``outputs`` (every head) and ``score`` (the blend) for candidates;
    with a rescoring model, ``rescore_scores`` for known users' candidates."""

    def __init__(self, folder: Path) -> None:
        self.meta: dict[str, Any] = json.loads((folder / "rank.json").read_text())
        with np.load(folder / "weights.npz") as z:
            self.w: Weights = {k: z[k] for k in z.files}
        self.user_part = np.load(folder / "user_part.npy", mmap_mode="r")
        self.item_part = np.load(folder / "item_part.npy", mmap_mode="r")
        trained = folder / "item_trained.npy"  # absent in a folder fit wrote before it
        self.item_trained: np.ndarray | None = np.load(trained) if trained.is_file() else None
        self.rescore: dict[str, Any] = self.meta.get("rescore") or {}
        ru, ri = folder / "rescore_user.npy", folder / "rescore_item.npy"
        self.rescore_user = np.load(ru, mmap_mode="r") if ru.is_file() else None
        self.rescore_item = np.load(ri, mmap_mode="r") if ri.is_file() else None
        self.body_w = {k[5:]: v for k, v in self.w.items() if k.startswith("body.")}
        name = self.meta["model"]
        if name in NUMPY_INTERACTIONS:
            self._body = NUMPY_INTERACTIONS.get(name)
        else:  # a custom model: its torch module. Imported by name so that the import
            # graph of the numpy path (import-linter's no-torch contract) stays torch-free;
            # the known-user test checks sys.modules for the built-in models.
            interactions = importlib.import_module("unirec.model.interactions")
            self._body = interactions.torch_body(self.meta, self.body_w)

    @property
    def active(self) -> bool:
        """Whether ``fit`` kept any of the stage: the net or the rescoring model."""
        return self.net_on(False) or self.rescore_on(False)

    def net_on(self, forced: bool) -> bool:
        """Whether a query runs the interaction model: ``fit`` kept it (``auto``: it beat
        retrieval on validation), or the query asked for the ranking stage (``forced``)."""
        return forced or bool(self.meta["active"])

    def rescore_on(self, forced: bool) -> bool:
        """Whether a query re-orders by the rescoring model: there is one, and ``fit`` kept
        it or the query asked for the ranking stage."""
        return self.rescore_user is not None and self.rescore_item is not None and \
            (forced or bool(self.rescore.get("active")))

    def rescore_scores(self, users: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """(n, C) the rescoring model's scores of candidate item indices for user indices."""
        assert self.rescore_user is not None and self.rescore_item is not None
        u = np.asarray(self.rescore_user[users], np.float32)
        return np.einsum("nd,ncd->nc", u, np.asarray(self.rescore_item[cand], np.float32))

    @classmethod
    def load(cls, model_dir: Path) -> Ranker | None:
        folder = Path(model_dir) / RANK_DIR
        if not (folder / "rank.json").is_file():
            return None
        try:
            return cls(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"the ranker in {str(folder)!r} is damaged ({exc}): run `unirec "
                             "fit` again") from None

    def project_users(self, tokens: np.ndarray) -> np.ndarray:
        """(n, Tu, tower_dim) user tower tokens -> (n, Tu, dim) parts (``RankNet.user_part``):
        for users with no precomputed row, e.g. new users given as records."""
        w = self.w
        return (_linear(w, "user_proj", np.asarray(tokens, np.float32) * w["user_keep"])
                + w["user_slot"]).astype(np.float32)

    def outputs(self, users: np.ndarray, cand: np.ndarray, u: np.ndarray, v: np.ndarray,
                score: np.ndarray, user_part: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """Each head's (n, C, out) for user indices (n,), candidate item indices (n, C),
        the towers' vectors ``u`` (n, d) and ``v`` (n, C, d), retrieval scores (n, C);
        ``user_part`` (n, Tu, dim) replaces the users' precomputed rows (``users`` unused)."""
        n, c = cand.shape
        w = self.w
        d = w["pair.weight"].shape[1] - 1  # the towers' width: served vectors may be wider
        u, v = u[..., :d], v[..., :d]  # (the category affinity's columns, model.affinity)
        pair = _linear(w, "pair", np.concatenate(
            [u[:, None, :] * v, score[..., None].astype(np.float32)], axis=-1))
        up = np.asarray(self.user_part[users]) if user_part is None else user_part
        tokens = np.concatenate([np.broadcast_to(up[:, None], (n, c, *up.shape[1:])),
                                 np.asarray(self.item_part[cand]), pair[:, :, None]], axis=2)
        hidden = self._body(self.body_w, tokens.reshape(n * c, *tokens.shape[2:]))
        out = {name[6:-7]: _linear(w, name[:-7], hidden).reshape(n, c, -1)
               for name in w if name.startswith("heads.") and name.endswith(".weight")}
        out["rank"] = out["rank"] + w["score_scale"] * score[..., None].astype(np.float32)
        return out

    def score(self, users: np.ndarray, cand: np.ndarray, u: np.ndarray, v: np.ndarray,
              score: np.ndarray, user_part: np.ndarray | None = None) -> np.ndarray:
        """(n, C) blended ranking scores, higher first."""
        return blend(self.outputs(users, cand, u, v, score, user_part), score, self.meta)


@dataclass
class RankResult:
    """What ``fit`` puts in the model folder's ``rank/``: ``rank.json`` (``meta``),
    ``weights.npz`` and the per-entity arrays."""

    meta: dict[str, Any]
    weights: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", **self.weights)
        for name, arr in self.arrays.items():
            np.save(folder / f"{name}.npy", arr)
        (folder / "rank.json").write_text(json.dumps(self.meta, indent=1) + "\n")


STAGES = ("auto", "rank", "retrieve")


def rerank(ranker: Ranker, users: np.ndarray | None, idx: np.ndarray, retrieval: np.ndarray,
           u: np.ndarray, items: np.ndarray, k: int, block: int = 64,
           user_part: np.ndarray | None = None, forced: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """Re-order retrieved ``idx`` (n, N; -1 pads, NaN scores) of user indices ``users`` (their
    vectors ``u``; or new users' ``user_part``, ``Ranker.project_users``) by the ranker,
    then by the rescoring model (known users only: new users have no vector in it); top
    ``k``. The parts ``fit`` kept run, or all of them when ``forced`` (``--stage rank``).
    Blocks of users keep the (users x N x tokens) working set small."""
    k = min(k, idx.shape[1])
    top = np.full((len(idx), k), -1, np.int64)
    out = np.full((len(idx), k), np.nan, np.float32)
    for lo in range(0, len(idx), block):
        sl = slice(lo, lo + block)
        valid = idx[sl] > 0
        cand = np.maximum(idx[sl], 0)
        score = np.where(valid, retrieval[sl], 0).astype(np.float32)
        s = ranker.score(None if users is None else users[sl], cand,
                         np.asarray(u[sl], np.float32), np.asarray(items[cand], np.float32),
                         score, None if user_part is None else user_part[sl]) \
            if ranker.net_on(forced) else score.astype(np.float64)
        if users is not None and ranker.rescore_on(forced):
            s = rescore_blend(s, ranker.rescore_scores(users[sl], cand), valid,
                              float(ranker.rescore["weight"]))
        fixed, last = new_item_rule(ranker.meta["config"].get("new_items", "retrieval"),
                                    ranker.item_trained, idx[sl])
        top[sl], out[sl] = top_by(idx[sl], s, k, fixed, last)
    return top, out


def top_by(idx: np.ndarray, s: np.ndarray, k: int, fixed: np.ndarray | None = None,
           last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of candidate lists ``idx`` (n, N in retrieval order; -1 pads) by scores
    ``s``; ties keep the retrieval order. Padding sorts last and comes back as -1 with score
    NaN. ``fixed`` (n, N) bool: candidates that keep their retrieval slot (items no
    training sample had, ``new_item_rule``); the others fill the remaining slots by ``s``,
    so their scores need not be monotone at a fixed slot. ``last``: the fixed items that
    made the top ``k`` move after the others, in retrieval order (same items, other
    places)."""
    s = np.where(idx > 0, s, -np.inf)
    if fixed is None or not fixed[:, :k].any():
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    else:
        fixed = fixed & (idx > 0)
        # NaN sorts last, after padding (+inf): a free slot never takes a fixed item twice
        ranked = np.argsort(np.where(fixed, np.nan, -s), axis=1, kind="stable")
        free = ~fixed[:, :k]
        nth = np.maximum(np.cumsum(free, axis=1) - 1, 0)  # the j-th free slot: j-th ranked
        pos = np.arange(min(k, idx.shape[1]))[None, :]
        order = np.where(free, np.take_along_axis(ranked, nth, 1), pos)
        if last:  # free slots first (padding is free and sorts to the end below), then fixed
            pad = np.take_along_axis(idx, order, 1) <= 0
            order = np.take_along_axis(order, np.argsort(2 * pad + ~free, axis=1,
                                                         kind="stable"), 1)
    top = np.take_along_axis(idx, order, 1)
    out = np.take_along_axis(s, order, 1)
    return top, np.where(top > 0, out, np.nan).astype(np.float32)


def new_item_rule(setting: str, trained: np.ndarray | None, cand: np.ndarray
                  ) -> tuple[np.ndarray | None, bool]:
    """How the stage places items no training sample had (``train.rank.new_items``), as
    ``top_by``'s ``fixed`` and ``last`` for candidates ``cand`` (n, N); ``trained``: per item
    index, whether a training sample of the served model had it (``item_trained.npy``).

    Why not the ranker: it reads popularity and learnt ids, so it never ranks an item nobody
    has met above the ones people did (MovieLens mixed: new_parity 0.34 -> 0.0), which
    retrieval's content path was built to do. So retrieval decides which new items enter the
    top k ('retrieval': in the slots it gave them). 'last' puts those same items after the
    warm ones: a slot on a new item, ranked from content alone, is hit less often than one
    on a warm item at any position of the top 10, so the same list scores better in order of
    that likelihood (MovieLens-100K mixed tuning carve, three seeds: NDCG@10 +4%, the same
    items, hits and new_parity; docs/ranking.md)."""
    if trained is None or setting == "ranker":
        return None, False
    return ~trained[np.maximum(cand, 0)], setting == "last"
