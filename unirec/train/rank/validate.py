"""Validation of the ranking stage: the store's validation users, each ranked over their
retrieval top-N (``rank.serve_candidates``, as served) by retrieval alone and by the
ranker's blended score, scored with the protocol's NDCG/Recall@K; plus each head's metric
on the validation interactions that carry its field (rating/weight RMSE, type accuracy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from unirec.config import TrainConfig
from unirec.metrics import ndcg_per_user, ranking_metrics, topk
from unirec.model.inputs import Inputs
from unirec.model.interactions import RankNet
from unirec.model.ranker import blend, new_item_rule, top_by
from unirec.model.towers import TwoTower
from unirec.train.rank.data import Frozen, Samples, user_side


def gain_z(diff: np.ndarray) -> float:
    """How many standard errors the mean per-user NDCG gain of the ranker over retrieval is
    from zero (paired over the same users). ``auto`` keeps the ranker only at or above
    ``train.rank.min_z``: on a small validation slice a gain of a few users is noise, and
    the epoch chosen as the best of several is biased upwards by about one such error."""
    if len(diff) < 2:
        return 0.0
    mean, se = float(diff.mean()), float(diff.std(ddof=1)) / np.sqrt(len(diff))
    return mean / se if se > 0 else float(np.clip(mean * 1e6, -1e6, 1e6))


@torch.no_grad()
def retrieval_top(model: TwoTower, inp: Inputs, frozen: Frozen, n: int, device: torch.device,
                  chunk: int = 1024
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]]:
    """The validation users' retrieval top-``n`` (their training items excluded), ``chunk``
    users at a time (a (users x catalogue) score matrix at once would not fit a big store):
    (user tokens, user vectors, candidates (c, n) with -1 pads, their retrieval scores)."""
    allowed = frozen.allowed.cpu().numpy()
    indptr, indices = inp.val_exclude
    for s in range(0, len(inp.val_users), chunk):
        e = min(s + chunk, len(inp.val_users))
        users = torch.from_numpy(inp.val_users[s:e]).to(device)
        tok, u = user_side(model, users, torch.from_numpy(inp.val_history[s:e]).to(device))
        full = (u @ frozen.item_vecs.T).cpu().numpy()
        full[:, ~allowed] = -np.inf
        sub = (indptr[s:e + 1] - indptr[s], indices[indptr[s]:indptr[e]])
        cand = topk(full, n, exclude=sub)
        yield tok, u, cand, np.take_along_axis(full, np.maximum(cand, 0), 1)


def placed_retrieval(cand: np.ndarray, score: np.ndarray, k: int, rule: str,
                     trained: np.ndarray) -> np.ndarray:
    """(V, k) retrieval's lists with items no training sample had placed by ``rule``
    (``train.rank.new_items``): what the stage serves when neither of its models re-orders,
    and so the baseline each model is judged against (with 'last', retrieval's own order
    would credit a model with what the placement alone gains)."""
    return top_by(cand, np.where(cand > 0, score, 0.0), k,
                  *new_item_rule(rule, trained, cand))[0]


def stage_metrics(recs: np.ndarray, inp: Inputs, k: int, stage: str) -> dict[str, float]:
    """``val_{stage}_ndcg@K`` and ``val_{stage}_recall@K`` of the validation users' lists
    ``recs`` (best first; only the first K count)."""
    m = ranking_metrics(recs[:, :k], *inp.val_truth, k=k, n_items=inp.n_items - 1)
    return {f"val_{stage}_{name}@{k}": m[f"{name}@{k}"] for name in ("ndcg", "recall")}


class Validation:
    """Built once (retrieval is frozen); called with the net after each epoch."""

    def __init__(self, model: TwoTower, inp: Inputs, frozen: Frozen, val: Samples,
                 cfg: TrainConfig, device: torch.device, chunk: int = 1024) -> None:
        self.k, self.inp, self.frozen, self.val = cfg.eval_k, inp, frozen, val
        # judged as served: items no training sample had are placed by new_item_rule
        self.trained = (inp.items["popularity"] > 0).numpy()
        self.new_items = cfg.rank.new_items
        self.empty = not len(inp.val_users)
        if self.empty:
            return
        toks, us, cands, scores = zip(*retrieval_top(model, inp, frozen,
                                                      cfg.rank.serve_candidates, device, chunk),
                                      strict=True)
        self.tok, self.u = torch.cat(toks), torch.cat(us)
        self.cand, self.score = np.concatenate(cands), np.concatenate(scores)
        placed = placed_retrieval(self.cand, self.score, self.k, self.new_items, self.trained)
        self.base = self._metrics(placed, "retrieval")
        self.base_users = ndcg_per_user(placed, *inp.val_truth, self.k)
        # head metrics: each validation interaction, its user as of the validation start
        self.rows = np.searchsorted(inp.val_users, val.user)
        self.device = device

    def _metrics(self, recs: np.ndarray, stage: str) -> dict[str, float]:
        return stage_metrics(recs, self.inp, self.k, stage)

    @torch.no_grad()
    def _outputs(self, net: RankNet, rows: np.ndarray, cand: np.ndarray, score: np.ndarray
                 ) -> dict[str, np.ndarray]:
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(np.maximum(cand, 0)).to(self.device)
        out = net(net.user_part(self.tok[r]), net.item_part(self.frozen.item_tokens[c]),
                  self.u[r], self.frozen.item_vecs[c],
                  torch.from_numpy(score.astype(np.float32)).to(self.device))
        return {name: t.float().cpu().numpy() for name, t in out.items()}

    def __call__(self, net: RankNet, meta: dict[str, Any], chunk: int = 64
                 ) -> dict[str, float]:
        if self.empty:
            return {}
        net.eval()
        recs = []
        for s in range(0, len(self.cand), chunk):
            rows = np.arange(s, min(s + chunk, len(self.cand)))
            cand = self.cand[rows]
            score = np.where(cand > 0, self.score[rows], 0.0)
            out = self._outputs(net, rows, cand, score)
            recs.append(top_by(cand, blend(out, score, meta), self.k,
                               *new_item_rule(self.new_items, self.trained, cand))[0])
        recs = np.concatenate(recs)
        row = {**self.base, **self._metrics(recs, "rank"),
               "val_rank_gain_z": gain_z(ndcg_per_user(recs, *self.inp.val_truth, self.k)
                                         - self.base_users)}
        row.update(self._heads(net, meta))
        net.train()
        return row

    def _heads(self, net: RankNet, meta: dict[str, Any]) -> dict[str, float]:
        heads = [h for h in meta["config"]["heads"]]
        if not heads or not len(self.val):
            return {}
        v = self.frozen.item_vecs[torch.from_numpy(self.val.item).to(self.device)]
        score = (self.u[torch.from_numpy(self.rows).to(self.device)] * v).sum(-1)
        out = self._outputs(net, self.rows, self.val.item[:, None],
                            score.cpu().numpy()[:, None])
        got = {}
        for name in heads:
            pred = out[name][:, 0]
            if name == "interaction_type":
                keep = self.val.types >= 0
                if keep.any():
                    got["val_interaction_type_accuracy"] = float(
                        (pred[keep].argmax(-1) == self.val.types[keep]).mean())
                continue
            truth = self.val.rating if name == "rating" else self.val.raw_weight
            keep = ~np.isnan(truth)
            if keep.any():
                mean, std = meta["stats"][name]
                err = mean + std * pred[keep, 0] - truth[keep]
                got[f"val_{name}_rmse"] = float(np.sqrt(np.mean(err ** 2)))
        return got
