"""What the ranker learns from: samples with their interaction fields, the frozen retrieval
model's tokens and vectors, and each sample's hard-negative candidates.

The towers stay frozen (eval mode, no gradient): their tokens are inputs here, so the ranker
cannot undo retrieval and its per-entity parts can be precomputed for serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unirec.model.inputs import gather_history
from unirec.model.towers import TwoTower
from unirec.store import Store
from unirec.train.step import PositiveMask


@dataclass
class Samples:
    """One split's samples (numpy) and their interaction fields (NaN / -1 where absent)."""

    user: np.ndarray
    item: np.ndarray
    hend: np.ndarray
    hlen: np.ndarray
    weight: np.ndarray  # the sample weight (loss weight)
    rating: np.ndarray  # float32, NaN where the interaction has none
    types: np.ndarray  # int64 index into type_names, -1 where none
    raw_weight: np.ndarray  # the interaction's own weight field, NaN where none
    type_names: list[str]

    def __len__(self) -> int:
        return len(self.user)


def load_samples(store: Store, split: str, type_names: list[str] | None = None) -> Samples:
    """``split``'s samples joined to their interactions (by input position)."""
    with store.connect() as con:
        got = con.sql(
            "SELECT s.user_index, s.item_index, s.history_end, s.history_length, s.weight, "
            "i.rating, i.interaction_type, i.weight AS raw_weight FROM samples s "
            "JOIN interactions i USING (position) WHERE s.split = $split ORDER BY s.position",
            params={"split": split}).to_arrow_table()
    got = {c: got.column(c).to_numpy(zero_copy_only=False) for c in got.column_names}
    kinds = np.asarray(got["interaction_type"], dtype=object)
    present = np.array([k is not None for k in kinds], bool) if len(kinds) else \
        np.zeros(0, bool)
    if type_names is None:
        type_names = sorted(set(kinds[present].tolist()))
    lookup = np.asarray(type_names, dtype=object)
    types = np.full(len(kinds), -1, np.int64)
    if len(lookup) and present.any():
        order = np.argsort(lookup)
        named = kinds[present].astype(str)
        pos = np.searchsorted(lookup[order].astype(str), named).clip(max=len(lookup) - 1)
        hit = lookup[order][pos].astype(str) == named
        types[np.flatnonzero(present)[hit]] = order[pos[hit]]

    def floats(col: str) -> np.ndarray:  # arrow gives NaN for NULL
        return np.asarray(got[col], dtype=np.float32)

    return Samples(
        user=np.asarray(got["user_index"], np.int64), item=np.asarray(got["item_index"],
                                                                      np.int64),
        hend=np.asarray(got["history_end"], np.int64),
        hlen=np.asarray(got["history_length"], np.int64),
        weight=np.asarray(got["weight"], np.float32), rating=floats("rating"),
        types=types, raw_weight=floats("raw_weight"), type_names=list(type_names))


@dataclass
class Frozen:
    """Every item's tower tokens and vector, and which items training saw."""

    item_tokens: torch.Tensor  # (n_items, Ti, d)
    item_vecs: torch.Tensor  # (n_items, d)
    allowed: torch.Tensor  # (n_items,) bool: candidates (every item but the padding row)


@torch.no_grad()
def frozen_items(model: TwoTower, popularity: torch.Tensor, device: torch.device,
                 signals: np.ndarray | None = None, chunk: int = 4096) -> Frozen:
    """Every item's tower tokens, plus (``signals``, (n_items, k)) one more token holding
    those scalars in its first k slots."""
    model.eval()
    n = len(popularity)
    tokens, vecs = [], []
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(s + chunk, n), device=device)
        tok = model.item.tokens(model.item.gather(idx), idx)
        tokens.append(tok.float())
        vecs.append(model.item.fuse(tok).float())
    # every item but the padding row: the pool serving re-ranks holds items no training
    # sample has (only in the validation slice, or new), so training and validation draw
    # from it too -- restricted to warm items, the ranker never saw those and scored them
    # at random, above everything (MovieLens temporal test NDCG@10 0.23 -> 0.07)
    allowed = torch.ones(n, dtype=torch.bool, device=device)
    allowed[0] = False
    tokens_all = torch.cat(tokens)
    if signals is not None:
        extra = torch.zeros(n, 1, tokens_all.shape[2], device=device)
        extra[:, 0, :signals.shape[1]] = torch.from_numpy(signals).to(device)
        tokens_all = torch.cat([tokens_all, extra], 1)
    return Frozen(tokens_all, torch.cat(vecs), allowed)


SIGNALS = ("popularity", "recent_popularity")


def item_signals(store: Store, n_items: int, recent: float = 0.1) -> np.ndarray:
    """(n_items, 2) standardised log1p of each item's training interactions, overall and in
    the last ``recent`` share of the training period: what retrieval's logQ correction
    takes out on purpose (popularity) and cannot know (a trend), as ranker inputs."""
    with store.connect() as con:
        got = con.sql(
            "WITH t AS (SELECT item_index, epoch(time) AS s FROM samples WHERE split = "
            "'train'), b AS (SELECT max(s) - $r * (max(s) - min(s)) AS cut FROM t) "
            "SELECT item_index, count(*) AS n, count(*) FILTER (WHERE s >= b.cut) AS recent "
            "FROM t, b GROUP BY item_index", params={"r": recent}).fetchnumpy()
    out = np.zeros((n_items, 2), np.float32)
    idx = np.asarray(got["item_index"], np.int64)
    out[idx, 0], out[idx, 1] = np.log1p(got["n"]), np.log1p(got["recent"])
    return (out - out.mean(0)) / np.maximum(out.std(0), 1e-6)


@torch.no_grad()
def user_side(model: TwoTower, users: torch.Tensor, history: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, Tu, d), unit vectors (B, d)) of users with these histories."""
    tok = model.user.tokens(model.user.gather(users), users, history)
    return tok.float(), model.user.fuse(tok).float()


@torch.no_grad()
def candidate_pool(u: torch.Tensor, users: torch.Tensor, frozen: Frozen,
                   positives: PositiveMask, n: int, pool: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, pool) the retrieval model's top ``pool`` items for each user among those that are
    none of its training positives, and whether each slot holds one (False where the
    catalogue ran out): what :func:`draw_candidates` draws negatives from."""
    scores = u @ frozen.item_vecs.T
    scores[:, ~frozen.allowed] = -torch.inf
    everything = torch.arange(len(frozen.allowed), device=u.device)
    scores.masked_fill_(positives(users, everything), -torch.inf)
    pool = min(max(pool, n), scores.shape[1])
    top, idx = scores.topk(pool, dim=1)
    return idx, top > -torch.inf


def draw_candidates(items: torch.Tensor, idx: torch.Tensor, ok: torch.Tensor, n: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1 + n) candidates -- the positive first, then ``n`` drawn at random from each
    sample's pool (:func:`candidate_pool`) -- and a validity mask.

    Drawn from the pool that serving re-ranks, not its very top: negatives only from the top
    few teach the ranker that a high retrieval score means "not chosen" (validation NDCG
    fell below random on the synthetic set within two epochs that way)."""
    pick = torch.rand(idx.shape, device=idx.device).masked_fill_(~ok, 2.0)
    pick = pick.argsort(1)[:, :min(n, idx.shape[1])]
    cand = torch.cat([items.unsqueeze(1), idx.gather(1, pick)], 1)
    valid = torch.cat([torch.ones_like(items, dtype=torch.bool).unsqueeze(1),
                       ok.gather(1, pick)], 1)
    return cand, valid


@torch.no_grad()
def batch_user_side(model: TwoTower, sequence: torch.Tensor, width: int, users: torch.Tensor,
                    hend: torch.Tensor, hlen: torch.Tensor, frozen: Frozen,
                    positives: PositiveMask, n: int, pool: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, vectors, pool, pool validity) of samples given by user and history end/length:
    one batch of :class:`Prepared`, and the per-batch path where that does not fit."""
    tok, u = user_side(model, users, gather_history(sequence, hend, hlen, width))
    return (tok, u, *candidate_pool(u, users, frozen, positives, n, pool))


@dataclass
class Prepared:
    """Each sample's frozen user side and candidate pool, computed once for all epochs (the
    towers are frozen, so every epoch would recompute the same; on MovieLens-100K that was
    a third of the stage's time)."""

    tok: torch.Tensor  # (N, Tu, d) user tokens
    u: torch.Tensor  # (N, d) user vectors
    pool: torch.Tensor  # (N, pool) int32 item indices
    ok: torch.Tensor  # (N, pool) bool


PREPARE_BYTES = 512 * 2 ** 20  # above this, the user side is recomputed per batch instead


@torch.no_grad()
def prepare(model: TwoTower, sequence: torch.Tensor, width: int, s: Samples, frozen: Frozen,
            positives: PositiveMask, n: int, pool: int, device: torch.device,
            chunk: int = 1024) -> Prepared | None:
    """:class:`Prepared` for every sample of ``s``, or None where it would take more than
    ``PREPARE_BYTES`` (a store with millions of samples: the per-batch path holds only a
    batch)."""
    n_tok, d = len(model.user.token_names), frozen.item_vecs.shape[1]
    width_pool = min(max(pool, n), len(frozen.allowed))
    if len(s) * (4 * d * (n_tok + 1) + 5 * width_pool) > PREPARE_BYTES:
        return None
    toks, us, pools, oks = [], [], [], []
    for lo in range(0, len(s), chunk):
        sl = slice(lo, lo + chunk)
        tok, u, idx, ok = batch_user_side(  # copies: the sample arrays are read-only
            model, sequence, width, torch.tensor(s.user[sl], device=device),
            torch.tensor(s.hend[sl], device=device), torch.tensor(s.hlen[sl], device=device),
            frozen, positives, n, pool)
        toks.append(tok)
        us.append(u)
        pools.append(idx.to(torch.int32))
        oks.append(ok)
    return Prepared(torch.cat(toks), torch.cat(us), torch.cat(pools), torch.cat(oks))
