"""``train.rank.rescore``: a second two-tower, trained for the items people met, whose scores
re-order the ranking stage's candidates (docs/ranking.md).

Why: retrieval is trained to bring items nobody has met into the lists -- a content-only
loss, a softer temperature, the new-item map -- and pays for it in precision among the items
people did meet. On MovieLens-100K a two-tower without those parts, at temperature 0.15,
ranks warm items ~7% better (temporal NDCG@10) and new items far worse. So retrieval keeps
its job (the candidates, and which items without interactions enter the list; where they
go is ``train.rank.new_items``) and this model, trained without the content parts,
re-orders the rest: ``(1 - w) z(stage) + w z(rescore)``
over each user's candidates (``unirec.model.ranker.rescore_blend``).

It is trained like retrieval -- early stopped on the validation slice, then refitted on
train + validation for the kept epochs (beside it in a second process where
``train.refit_parallel`` allows) -- and judged like the interaction model: the validation
users' retrieval top-N (the retrieval model before its refit, which neither has seen) ranked
by retrieval alone and re-ordered, new items placed the same way in both
(``unirec.train.rank.validate.placed_retrieval``), ``auto`` keeping it at
``train.rank.min_z`` standard errors of gain.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirec.config import TrainConfig
from unirec.metrics import ndcg_per_user
from unirec.model.inputs import Inputs
from unirec.model.outputs import embed_all, selection_score
from unirec.model.ranker import RankResult, new_item_rule, rescore_blend, top_by
from unirec.model.towers import TwoTower
from unirec.store import Store, serving_histories
from unirec.train.rank.data import frozen_items, user_side
from unirec.train.rank.validate import gain_z, placed_retrieval, retrieval_top, stage_metrics
from unirec.train.refit import refit_epochs
from unirec.train.refit_ahead import RefitAhead, wanted
from unirec.train.selection import epoch_verdict, validate
from unirec.train.step import make_optimizer


def rescore_config(cfg: TrainConfig) -> TrainConfig:
    """Retrieval's settings without what serves new items: no content-only loss, no map,
    no cold slice, at ``train.rank.rescore_temperature``."""
    return cfg.model_copy(update={"temperature": cfg.rank.rescore_temperature,
                                  "content_loss": 0.0, "new_item_map": False,
                                  "cold_val_items": 0.0})


@dataclass
class Judge:
    """The validation users' retrieval candidates, taken from the retrieval model before its
    refit, and how retrieval alone ranks them (new items placed as served): what the
    rescoring model is judged against."""

    cand: np.ndarray  # (V, N) item indices, -1 pads
    score: np.ndarray  # (V, N) retrieval scores
    fixed: np.ndarray | None  # (V, N) items placed by retrieval (no training sample)
    last: bool  # those items after the others (train.rank.new_items = "last")
    placed: np.ndarray  # (V, K) retrieval's lists, new items placed (placed_retrieval)
    base: np.ndarray  # per-user NDCG@K of those

    @classmethod
    @torch.no_grad()
    def build(cls, model: TwoTower, inp: Inputs, cfg: TrainConfig, device: torch.device
              ) -> Judge | None:
        """None without validation users (``auto`` then cannot judge)."""
        if len(inp.val_users) < 2:
            return None
        was = model.training
        model.eval()
        frozen = frozen_items(model, inp.items["popularity"], device)
        top = [(c, s) for _, _, c, s in
               retrieval_top(model, inp, frozen, cfg.rank.serve_candidates, device)]
        cand, score = np.concatenate([c for c, _ in top]), np.concatenate([s for _, s in top])
        trained = (inp.items["popularity"] > 0).numpy()
        fixed, last = new_item_rule(cfg.rank.new_items, trained, cand)
        placed = placed_retrieval(cand, score, cfg.eval_k, cfg.rank.new_items, trained)
        model.train(was)
        return cls(cand, score, fixed, last, placed,
                   ndcg_per_user(placed, *inp.val_truth, cfg.eval_k))

    @torch.no_grad()
    def __call__(self, rescorer: TwoTower, inp: Inputs, cfg: TrainConfig,
                 device: torch.device, chunk: int = 256) -> dict[str, float]:
        """Validation NDCG/Recall@K re-ordered by ``rescorer`` and the paired gain's z."""
        was = rescorer.training
        rescorer.eval()
        v = frozen_items(rescorer, inp.items["popularity"], device).item_vecs
        rs = np.empty(self.cand.shape, np.float32)
        for s in range(0, len(inp.val_users), chunk):  # (users x N x dim) kept small
            e = min(s + chunk, len(inp.val_users))
            users = torch.from_numpy(inp.val_users[s:e]).to(device)
            u = user_side(rescorer, users, torch.from_numpy(inp.val_history[s:e]).to(device))[1]
            c = torch.from_numpy(np.maximum(self.cand[s:e], 0)).to(device)
            rs[s:e] = torch.einsum("vd,vnd->vn", u, v[c]).cpu().numpy()
        valid = self.cand > 0
        s = rescore_blend(np.where(valid, self.score, 0.0), rs, valid, cfg.rank.rescore_weight)
        k = cfg.eval_k
        recs = top_by(self.cand, s, k, self.fixed, self.last)[0]
        rescorer.train(was)
        return {**stage_metrics(self.placed, inp, k, "retrieval"),
                **stage_metrics(recs, inp, k, "rescore"),
                "val_rescore_gain_z": gain_z(ndcg_per_user(recs, *inp.val_truth, k)
                                             - self.base)}


def fit_rescorer(st: Store, inp: Inputs, cfg: TrainConfig, device: torch.device, work: Path,
                 judge: Judge | None, progress: bool | None = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """Train, judge and refit the rescoring model; (``rank.json``'s ``rescore`` entry, the
    served user/item vectors) or None when ``train.rank.rescore`` is false."""
    from unirec.train import loop  # the run's own helpers; loop imports this module

    if cfg.rank.rescore is False:
        return None
    if judge is None and cfg.rank.rescore == "auto":  # nothing to judge it on: not trained
        return {"active": False, "note": "no validation slice: auto cannot compare, "
                "rescoring is off"}, {}
    scfg, k = rescore_config(cfg), cfg.eval_k
    loop._seed(scfg.seed)
    model = TwoTower(inp.manifest, inp.users, inp.items, inp.text, inp.image,
                     inp.user_trained, scfg).to(device)
    opt = make_optimizer(model.parameters(), scfg, device)
    net, step, stream = loop._stepper(model, opt, inp, scfg, device, 0, 1, None)
    state: dict[str, Any] = {"best": -math.inf, "bad_epochs": 0, "history": []}
    best: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    parallel = wanted(scfg, device, 1, False, False, inp)
    with (RefitAhead.start(st.path, scfg, work / "rescore-ahead.safetensors") if parallel
          else contextlib.nullcontext()) as ahead:
        for epoch in range(1, scfg.epochs + 1):
            total, seen, secs = loop._train_epoch(net, step, stream, inp, epoch, device, 1,
                                                  progress, f"rescore {epoch}")
            row = {"stage": "rescore", "rescore_epoch": epoch, "train_loss":
                   total / max(seen, 1), "rescore_train_seconds": round(secs, 3),
                   **validate(model, inp, k, device)}
            improved = epoch_verdict(state, {**row, "epoch": epoch}, k, scfg.min_gain)
            if ahead is not None:
                ahead.epoch(epoch, improved)
            if improved:
                best = {n: t.detach().clone() for n, t in model.state_dict().items()}
            with open(work / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if state["bad_epochs"] >= scfg.patience:
                break
        assert best is not None
        model.load_state_dict(best)
        kept = int(max(state["history"], key=lambda r: selection_score(r, k))["epoch"])
        figures = judge(model, inp, cfg, device) if judge is not None else {}
        epochs = refit_epochs(state, scfg.refit, inp, k)
        if ahead is not None:
            ahead.stop_at(epochs)
        served, refit = model, False
        if epochs:
            served, _, refit = loop.train_refit(st, inp, scfg, device, epochs,
                                                progress=progress, ahead=ahead,
                                                desc="rescore refit")
    helps = bool(figures) and figures[f"val_rescore_ndcg@{k}"] > \
        figures[f"val_retrieval_ndcg@{k}"] and figures["val_rescore_gain_z"] >= cfg.rank.min_z
    meta: dict[str, Any] = {
        "active": bool(cfg.rank.rescore is True or helps), "weight": cfg.rank.rescore_weight,
        "temperature": scfg.temperature, "best_epoch": kept, "refit_epochs": epochs,
        "refit_parallel": refit, "seconds": round(time.perf_counter() - started, 1),
        "validation": figures}
    length = inp.manifest["samples"]["history_length"]
    vectors = {"rescore_user": embed_all(served, inp.n_users, "user", device,
                                         serving_histories(st, length)),
               "rescore_item": embed_all(served, inp.n_items, "item", device)}
    return meta, vectors


def add_rescorer(ranker: RankResult, st: Store, inp: Inputs, cfg: TrainConfig,
                 device: torch.device, out: Path, judge: Judge | None,
                 progress: bool | None, skipped_by: str | None) -> None:
    """``train.rank.rescore``: train its model and add it to the ranking stage's files; a
    warm start or a data-parallel fit leaves it out, saying so in ``rank.json``."""
    if skipped_by is not None:
        ranker.meta["rescore"] = {"active": False, "note": f"{skipped_by} does not train the "
                                  "rescoring model: a full single-process fit does"}
        return
    got = fit_rescorer(st, inp, cfg, device, out, judge, progress)
    if got is not None:
        ranker.meta["rescore"], vectors = got
        ranker.arrays.update(vectors)
