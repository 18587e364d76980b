"""Training the ranking stage, after retrieval: listwise (or BCE) over hard candidates, the
auxiliary heads, validation NDCG@K of retrieval alone against retrieval + ranking per epoch
(rows with ``"stage": "rank"`` in ``metrics.jsonl``), and ``auto``'s keep-or-drop."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unirec.config import TrainConfig
from unirec.errors import ConfigError
from unirec.model.checkpoint import load_weights
from unirec.model.inputs import Inputs
from unirec.model.interactions import RankNet
from unirec.model.ranker import FORMAT, RANK_DIR, RankResult
from unirec.model.towers import TwoTower
from unirec.store import Store, serving_histories
from unirec.train.rank.data import (
    SIGNALS,
    Frozen,
    Prepared,
    Samples,
    batch_user_side,
    draw_candidates,
    frozen_items,
    item_signals,
    load_samples,
    prepare,
    user_side,
)
from unirec.train.rank.holdout import join_samples, positive_keys, split_validation
from unirec.train.rank.validate import Validation
from unirec.train.step import PositiveMask, make_optimizer


def _stats(values: np.ndarray) -> list[float]:
    ok = values[~np.isnan(values)]
    return [float(ok.mean()), float(max(ok.std(), 1e-6))]


def _check(cfg: TrainConfig, train: Samples) -> dict[str, list[float]]:
    """Heads need their field; blend terms need their head. Returns (mean, std) per field."""
    rc, stats = cfg.rank, {}
    fields = {"rating": train.rating, "weight": train.raw_weight}
    for name in rc.heads:
        have = (train.types >= 0).any() if name == "interaction_type" else \
            bool((~np.isnan(fields[name])).any())
        if not have:
            raise ConfigError(f"train.rank.heads: {name!r} needs interactions with a {name} "
                              f"field; none of the {len(train)} training interactions has one")
        if name in fields:
            stats[name] = _stats(fields[name])
    for term in rc.blend:
        head = term.split(":", 1)[0]
        if head != "retrieval" and head not in rc.heads:
            raise ConfigError(f"train.rank.blend: {term!r} needs the {head!r} head in "
                              "train.rank.heads")
        if head == "interaction_type" and term.split(":", 1)[1] not in train.type_names:
            raise ConfigError(f"train.rank.blend: no interaction type {term.split(':', 1)[1]!r}"
                              f" in training; known: {', '.join(train.type_names)}")
    return stats


def head_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                stats: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """The auxiliary losses on each sample's positive (slot 0), where it has the field."""
    losses = {}
    for name, pred in out.items():
        if name == "rank":
            continue
        if name == "interaction_type":
            keep = batch["types"] >= 0
            if keep.any():
                losses[name] = F.cross_entropy(pred[keep, 0], batch["types"][keep])
            continue
        target = batch["rating" if name == "rating" else "raw_weight"]
        keep = ~torch.isnan(target)
        if keep.any():
            mean, std = stats[name]
            losses[name] = F.mse_loss(pred[keep, 0, 0], (target[keep] - mean) / std)
    return losses


def rank_loss(logits: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor,
              kind: str) -> torch.Tensor:
    """Listwise: softmax over the candidate list, the positive (slot 0) the target; bce:
    positive toward 1, each valid negative toward 0 (averaged per sample)."""
    if kind == "listwise":
        per = -torch.log_softmax(logits.masked_fill(~valid, -torch.inf), 1)[:, 0]
    else:
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        neg = (bce[:, 1:] * valid[:, 1:]).sum(1) / valid[:, 1:].sum(1).clamp(min=1)
        per = bce[:, 0] + neg
    return (per * weight).sum() / weight.sum().clamp(min=1e-12)


class Trainer:
    """The net, its optimiser and one epoch over the training samples."""

    def __init__(self, model: TwoTower, inp: Inputs, cfg: TrainConfig, frozen: Frozen,
                 net: RankNet, stats: dict[str, list[float]], device: torch.device,
                 keys: torch.Tensor) -> None:
        self.model, self.inp, self.cfg, self.frozen, self.net = model, inp, cfg, frozen, net
        self.stats, self.device = stats, device
        self.opt = make_optimizer(net.parameters(), cfg.rank, device)
        self.positives = PositiveMask(keys.to(device), inp.n_users, inp.n_items)
        self.sequence = inp.sequence.to(device)
        self.width = inp.manifest["samples"]["history_length"]
        self._prepared: tuple[Samples, Prepared | None] | None = None

    def _tensors(self, s: Samples, rows: np.ndarray) -> dict[str, torch.Tensor]:
        names = ("user", "item", "hend", "hlen", "weight", "rating", "types", "raw_weight")
        return {n: torch.from_numpy(getattr(s, n)[rows]).to(self.device) for n in names}

    def _user_side(self, s: Samples, rows: np.ndarray, b: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, vector, candidates, validity) of the batch ``rows`` of ``s``: from the
        samples' :class:`Prepared` where it fits in memory, else computed here."""
        rc = self.cfg.rank
        if self._prepared is None or self._prepared[0] is not s:
            self._prepared = (s, prepare(self.model, self.sequence, self.width, s, self.frozen,
                                         self.positives, rc.candidates_n,
                                         rc.serve_candidates, self.device))
        ready = self._prepared[1]
        if ready is None:
            tok, u, pool, ok = batch_user_side(
                self.model, self.sequence, self.width, b["user"], b["hend"], b["hlen"],
                self.frozen, self.positives, rc.candidates_n, rc.serve_candidates)
        else:
            r = torch.from_numpy(rows).to(self.device)
            tok, u, pool, ok = ready.tok[r], ready.u[r], ready.pool[r].long(), ready.ok[r]
        return (tok, u, *draw_candidates(b["item"], pool, ok, rc.candidates_n))

    def epoch(self, s: Samples, rng: np.random.Generator) -> float:
        rc, net = self.cfg.rank, self.net
        order = rng.permutation(len(s))
        if rc.max_samples:
            order = order[:rc.max_samples]
        net.train()
        total, seen = 0.0, 0
        for lo in range(0, len(order), rc.batch_size):
            rows = order[lo:lo + rc.batch_size]
            b = self._tensors(s, rows)
            tok, u, cand, valid = self._user_side(s, rows, b)
            distinct, inv = torch.unique(cand, return_inverse=True)
            # index_select, not [inv]: its backward adds in order, where indexing's adds
            # with atomics across CPU threads and the same seed trained another ranker
            part = net.item_part(self.frozen.item_tokens[distinct])
            item_part = part.index_select(0, inv.flatten()).view(*inv.shape,
                                                                *part.shape[1:])
            v = self.frozen.item_vecs[cand]
            out = net(net.user_part(tok), item_part, u, v, (u.unsqueeze(1) * v).sum(-1))
            loss = rank_loss(out["rank"][..., 0], valid, b["weight"], rc.loss)
            for name, aux in head_losses(out, b, self.stats).items():
                loss = loss + rc.heads[name] * aux
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(cand)
            seen += len(cand)
        return total / max(seen, 1)


def _build(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
           device: torch.device, train: Samples
           ) -> tuple[Frozen, RankNet, dict[str, Any], np.ndarray | None]:
    """The frozen retrieval side, a fresh net (seeded) and the ranker's settings."""
    rc = cfg.rank
    torch.manual_seed(cfg.seed)
    stats = _check(cfg, train)
    signals = item_signals(store, inp.n_items) if rc.popularity else None
    frozen = frozen_items(model, inp.items["popularity"], device, signals)
    item_names = model.item.token_names + (list(SIGNALS[:1]) if rc.popularity else [])
    n_user_tokens = len(model.user.token_names)
    net = RankNet(n_user_tokens, frozen.item_tokens.shape[1], frozen.item_vecs.shape[1], rc,
                  len(train.type_names), 1.0 / cfg.temperature,
                  ([rc.ids or n != "user_id" for n in model.user.token_names],
                   [rc.ids or n != "item_id" for n in item_names])).to(device)
    meta: dict[str, Any] = {
        "format": FORMAT, "model": rc.model, "config": rc.model_dump(mode="json"),
        "n_tokens": n_user_tokens + frozen.item_tokens.shape[1] + 1,
        "type_names": train.type_names, "stats": stats, "k": cfg.eval_k}
    return frozen, net, meta, signals


@contextlib.contextmanager
def frozen_retrieval(model: TwoTower) -> Iterator[TwoTower]:
    """The retrieval model in eval mode with no gradients while a ranker learns over it,
    then as it was: its training mode and every parameter's ``requires_grad`` (an encoder's
    own frozen projections stay frozen), so code that goes on training it still can."""
    training, flags = model.training, [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def _continue(net: RankNet, served: Path) -> list[str]:
    """``fit --warm-start``: start the net from the served ranker's weights (``served``, the
    model folder's ``rank/``), every one whose shape still fits (a head over interaction
    types the append added starts fresh). Returns the names continued."""
    if not (served / "weights.npz").is_file():
        return []
    own = net.state_dict()
    with np.load(served / "weights.npz") as z:
        old = {k: torch.from_numpy(z[k]) for k in z.files
               if k in own and tuple(z[k].shape) == tuple(own[k].shape)}
    net.load_state_dict(old, strict=False)
    return sorted(old)


def fit_ranker(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
               device: torch.device, work: Path, warm: bool = False) -> RankResult | None:
    """Train the ranker on the best retrieval weights (before any ``train.refit``: neither
    has seen the validation users that judge it); None when ``train.rank.enabled`` is
    false. ``warm`` (``fit --warm-start``): continue the served ranker, then judge it as
    any. The result's ``meta["active"]`` says whether serving uses it."""
    if cfg.rank.enabled is False:
        return None
    with frozen_retrieval(model):
        return _fit_ranker(store, model, inp, cfg, device, work, warm)


def _fit_ranker(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
                device: torch.device, work: Path, warm: bool) -> RankResult:
    rc = cfg.rank
    load_weights(work / "best.safetensors", model)
    train = load_samples(store, "train")
    frozen, net, meta, signals = _build(store, model, inp, cfg, device, train)
    if warm:
        kept = _continue(net, store.path / "model" / RANK_DIR)
        meta["warm_start"] = {"continued": len(kept), "of": len(net.state_dict())}
    val_samples = load_samples(store, "val", train.type_names)
    keys, judged = inp.positive_keys, inp
    if rc.fit_on == "validation" and len(inp.val_users) > 1:
        train, judged, val_samples = split_validation(inp, val_samples, rc.holdout_share,
                                                      cfg.seed)
        keys = positive_keys(inp, train)
        meta["fit_on"] = "validation"
    trainer = Trainer(model, inp, cfg, frozen, net, meta["stats"], device, keys)
    val = Validation(model, judged, frozen, val_samples, cfg, device)
    rng = np.random.default_rng(cfg.seed)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    rows, key = [], f"val_rank_ndcg@{cfg.eval_k}"
    for epoch in range(1, rc.epochs + 1):
        started = time.perf_counter()
        loss = trainer.epoch(train, rng)
        row = {"stage": "rank", "rank_epoch": epoch, "rank_loss": loss,
               "rank_train_seconds": round(time.perf_counter() - started, 3),
               **val(net, meta)}
        rows.append(row)
        with open(work / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        score = row.get(key, -loss)
        if best is None or score > best[0]:
            best = (score, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
        elif epoch - best[1] >= 2:
            break
    assert best is not None
    net.load_state_dict(best[2])
    chosen = rows[best[1] - 1]
    base = chosen.get(f"val_retrieval_ndcg@{cfg.eval_k}")
    # auto: a gain, and one the judging users' spread cannot explain (train.rank.min_z)
    helps = base is not None and chosen[key] > base and chosen["val_rank_gain_z"] >= rc.min_z
    meta.update(active=bool(rc.enabled is True or helps), best_epoch=best[1],
                n_samples=len(train),
                validation={k: v for k, v in chosen.items() if k.startswith("val_")})
    if rc.enabled == "auto" and base is None:
        meta["note"] = "no validation slice: auto cannot compare, the ranker is off"
    return RankResult(meta, {k: v.cpu().numpy() for k, v in net.state_dict().items()},
                      _parts(store, model, net, inp, device, signals))


def refit_ranker(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
                 device: torch.device, work: Path, first: RankResult) -> RankResult:
    """``train.refit`` for the ranker: once retrieval is refitted on train + validation, a
    fresh ranker (same seed) learns from all of what the first one learnt from -- every
    validation user's slice (``fit_on`` validation), else train + validation -- over the
    refitted model's tokens and candidates, for the epoch count the first one kept, and is
    served. Its tokens are the served model's, so serving and cold-start users need no
    second retrieval model. Whether it serves (``auto``) and its validation figures are the
    first ranker's, judged on users neither model had seen (rank.json's ``refit`` says
    so)."""
    with frozen_retrieval(model):
        return _refit_ranker(store, model, inp, cfg, device, work, first)


def _refit_ranker(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
                  device: torch.device, work: Path, first: RankResult) -> RankResult:
    train = load_samples(store, "train")
    val = load_samples(store, "val", train.type_names)
    samples = val if first.meta.get("fit_on") == "validation" else join_samples(train, val)
    frozen, net, meta, signals = _build(store, model, inp, cfg, device, train)
    trainer = Trainer(model, inp, cfg, frozen, net, first.meta["stats"], device,
                      inp.positive_keys)
    rng = np.random.default_rng(cfg.seed)
    epochs = int(first.meta["best_epoch"])
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        loss = trainer.epoch(samples, rng)
        row = {"stage": "rank_refit", "rank_epoch": epoch, "rank_loss": loss,
               "rank_train_seconds": round(time.perf_counter() - started, 3)}
        with open(work / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    meta = {**first.meta, "refit": {"epochs": epochs, "n_samples": len(samples),
                                    "retrieval": "train+val", "judged_on": "the first "
                                    "ranker over the retrieval model before its refit"}}
    return RankResult(meta, {k: v.cpu().numpy() for k, v in net.state_dict().items()},
                      _parts(store, model, net, inp, device, signals))


@torch.no_grad()
def _parts(store: Store, model: TwoTower, net: RankNet, inp: Inputs, device: torch.device,
           signals: np.ndarray | None, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Every user's (latest history) and item's projected tokens, for serving."""
    net.eval()
    length = inp.manifest["samples"]["history_length"]
    hist = serving_histories(store, length)
    users = []
    for s in range(0, inp.n_users, chunk):
        idx = torch.arange(s, min(s + chunk, inp.n_users), device=device)
        h = torch.from_numpy(hist[s:s + chunk]).to(device)
        users.append(net.user_part(user_side(model, idx, h)[0]).cpu().numpy())
    frozen = frozen_items(model, inp.items["popularity"], device, signals)
    items = net.item_part(frozen.item_tokens).cpu().numpy()
    return {"user_part": np.concatenate(users).astype(np.float32),
            "item_part": items.astype(np.float32),
            "item_trained": (inp.items["popularity"] > 0).numpy()}


__all__ = ["RANK_DIR", "RankResult", "fit_ranker", "refit_ranker"]
