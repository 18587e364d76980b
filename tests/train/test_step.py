"""The fast training step equals the plain one: same mask, same loss, same gradients.

The plain reference below is the previous release's formulation written out: history items
projected once per slot, attention over a (B, L, dim) tensor, masked means, a binary search
per (user, candidate) pair, and the loss as cross-entropy over concatenated logits.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_store, invoke
from hypothesis import given, settings
from hypothesis import strategies as st

from unirec import Store
from unirec.config import TrainConfig
from unirec.model.encoders import (
    CategoricalEncoder,
    HistoryEncoder,
    IdSequenceEncoder,
    masked_mean,
)
from unirec.model.inputs import gather_history, load_inputs
from unirec.model.towers import Tower, TwoTower
from unirec.train.data import ShardStream
from unirec.train.loop import Sampler, _positive_mask
from unirec.train.losses import LOSSES
from unirec.train.selection import _bad_epochs
from unirec.train.step import PositiveMask, Step, make_optimizer


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 19)), min_size=1, max_size=40),
       st.lists(st.integers(0, 9), min_size=1, max_size=8),
       st.lists(st.integers(0, 19), min_size=1, max_size=12))
def test_positive_mask_equals_the_search_per_pair(pairs, users, items) -> None:
    n_users, n_items = 10, 20
    keys = torch.tensor(sorted({u * n_items + i for u, i in pairs}))
    fast = PositiveMask(keys, n_users, n_items)
    u, c = torch.tensor(users), torch.tensor(items)
    assert torch.equal(fast(u, c), _positive_mask(keys, u, c, n_items))
    assert torch.equal(fast(u, c), _positive_mask(keys, u, c, n_items))  # scratch left clean


def _plain_history(h: HistoryEncoder, history: torch.Tensor) -> torch.Tensor:
    idx = history.long()
    mask = idx > 0
    x = h.proj(h.item_table(idx))
    if h.mode == "mean":
        return masked_mean(x, mask)
    x = x + h.pos[-idx.shape[1]:]
    if h.mode == "attention":
        q = h.query(x[:, -1])
        scores = torch.einsum("bld,bd->bl", x, q) / x.shape[-1] ** 0.5
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), 1).nan_to_num(0.0)
        return torch.einsum("bl,bld->bd", weights, x)
    pad = ~mask
    pad[:, -1] = False
    return h.layer(x, src_key_padding_mask=pad)[:, -1]


def _plain_tower(tower: Tower, idx: torch.Tensor, history: torch.Tensor | None = None,
                 ids: bool = True) -> torch.Tensor:
    rows = tower.gather(idx)
    tokens = []
    for enc in tower.encoders:
        col = rows[enc.name].long() if enc.name in rows else None
        if isinstance(enc, CategoricalEncoder) and col.dim() == 2:
            tokens.append(masked_mean(enc.table(col), col > 0))
        elif isinstance(enc, IdSequenceEncoder):
            tokens.append(enc.proj(masked_mean(enc.shared[0].item_table(col), col > 0)))
        else:
            tokens.append(enc(rows))
    if tower.ids is not None:  # ids hidden: the content-only vector of a new item
        tokens.append(tower.ids(idx) if ids else torch.zeros_like(tokens[0]))
    if tower.history is not None:
        tokens.append(_plain_history(tower.history, history))
    return F.normalize(tower.fusion(torch.stack(tokens, dim=1)), dim=-1)


def _plain_loss(model: TwoTower, inp, sampler: Sampler, cfg: TrainConfig, batch, negs,
                content: bool = False):
    """Cross-entropy over all B + S columns, repeats included; with ``content``, plus
    ``content_loss`` x the same loss on the items' content-only vectors."""
    u = _plain_tower(model.user, batch["user"].long(), batch["history"])
    loss = _plain_softmax(model, inp, sampler, cfg, batch, negs, u, True)
    if content:
        loss = loss + cfg.content_loss * _plain_softmax(model, inp, sampler, cfg, batch, negs,
                                                        u, False)
    return loss


def _plain_softmax(model: TwoTower, inp, sampler: Sampler, cfg: TrainConfig, batch, negs,
                   u: torch.Tensor, ids: bool) -> torch.Tensor:
    user, item = batch["user"].long(), batch["item"].long()
    v, nv = _plain_tower(model.item, item, ids=ids), _plain_tower(model.item, negs, ids=ids)
    logits = torch.cat([u @ v.T, u @ nv.T], dim=1) / cfg.temperature
    logits = logits - torch.cat([sampler.logq[item], sampler.logq[negs]])
    keys = inp.positive_keys
    mask = torch.cat([_positive_mask(keys, user, item, inp.n_items),
                      _positive_mask(keys, user, negs, inp.n_items)], dim=1)
    eye = torch.eye(len(logits), logits.shape[1], dtype=torch.bool)
    logits = logits.masked_fill(mask & ~eye, float("-inf"))
    loss = F.cross_entropy(logits, torch.arange(len(logits)), reduction="none")
    w = batch["weight"].float()
    return (loss * w).sum() / w.sum()


@pytest.fixture(scope="module")
def inputs(synthetic_store):
    return load_inputs(Store(synthetic_store))


@pytest.mark.parametrize("history,fusion,size,gemm,content", [
    ("attention", "simple", 256, 64, True), ("attention", "simple", 2, 64, False),
    ("attention", "attention", 256, 0, True), ("mean", "simple", 2, 64, False),
    ("transformer", "simple", 256, 64, False), ("attention", "simple", 256, 0, False)])
def test_fast_step_equals_the_plain_step(inputs, monkeypatch, history, fusion, size,
                                         gemm, content) -> None:
    """Loss and every gradient, on a fixed batch; ``size`` 2 takes the distinct-items path
    of the history projection (fewer slots than catalogue rows), 256 the whole catalogue;
    ``gemm`` 0 the attention's row-dot-product path; ``content`` adds the content-only loss
    (the item features encoded once for both). The fast step's softmax runs over the
    distinct candidates with a hand-written backward; the plain one over all B + S columns
    through autograd."""
    monkeypatch.setattr(HistoryEncoder, "gemm_rows_per_slot", gemm)
    cfg = TrainConfig(history=history, fusion=fusion, batch_size=size, negatives=32)
    torch.manual_seed(0)
    model = TwoTower(inputs.manifest, inputs.users, inputs.items, inputs.text, inputs.image,
                     inputs.user_trained, cfg)
    model.eval()  # dropout off: both steps must see the same network
    batch = next(iter(ShardStream(inputs.train_shards, batch_size=size)))
    batch["history"] = gather_history(inputs.sequence, batch["hend"], batch["hlen"],
                                      inputs.manifest["samples"]["history_length"])
    negs = torch.randint(1, inputs.n_items, (32,))
    negs[0] = batch["item"][0]  # a candidate that collides with a positive
    sampler = Sampler(inputs.items["popularity"], cfg, size, 32)
    step = Step(model, make_optimizer(model.parameters(), cfg, torch.device("cpu")), sampler,
                LOSSES.get("softmax")(),
                PositiveMask(inputs.positive_keys, inputs.n_users, inputs.n_items), cfg,
                torch.device("cpu"), False, content=content)
    fast = step.loss(batch, negs)
    fast.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    plain = _plain_loss(model, inputs, sampler, cfg, batch, negs, content)
    plain.backward()
    assert math.isfinite(fast.item())
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-6), (fast.item(), plain.item())
    for name, p in model.named_parameters():
        if p.grad is None:
            assert name not in grads or not grads[name].any(), name
            continue
        assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-6), name


def test_min_gain_stops_a_flat_curve() -> None:
    """Gains under ``min_gain`` of the score buy no patience; a real gain resets it."""
    state = {"best": -1.0, "bad_epochs": 0, "history": []}
    seen = []
    for score in (0.100, 0.150, 0.151, 0.152, 0.1525, 0.170):
        state["bad_epochs"] = _bad_epochs(state, score, 0.02)
        state["history"].append(score)
        seen.append(state["bad_epochs"])
    assert seen == [0, 0, 1, 2, 3, 0]
    zero = {"best": -1.0, "bad_epochs": 0, "history": [1]}
    assert _bad_epochs(zero, 0.1, 0.0) == 0 and _bad_epochs(zero, 0.1, 0.0) == 1


def test_min_gain_through_the_cli(tmp_path, checkerboard_store) -> None:
    """A gain of 1000% is never reached: patience 1 ends the fit after epoch 2 of 6."""
    store = copy_store(checkerboard_store, tmp_path / "store")
    result = invoke("fit", "--store", store, "--epochs", "6", "--set", "train.patience=1",
                    "--set", "train.min_gain=10", "--set", "train.batch_size=512")
    assert result.exit_code == 0, result.output
    assert "trained 2 epochs" in result.stdout


def test_bf16_autocast_step_runs_close_to_fp32(inputs) -> None:
    """The CUDA path's bf16 autocast through the hand-written backwards (compact softmax,
    slot scores, weighted bag), run here with CPU autocast: finite, and the loss and the
    gradients' directions close to fp32's."""
    cfg = TrainConfig(batch_size=256, negatives=32, precision="bf16")
    torch.manual_seed(0)
    model = TwoTower(inputs.manifest, inputs.users, inputs.items, inputs.text, inputs.image,
                     inputs.user_trained, cfg)
    model.eval()
    batch = next(iter(ShardStream(inputs.train_shards, batch_size=256)))
    batch["history"] = gather_history(inputs.sequence, batch["hend"], batch["hlen"],
                                      inputs.manifest["samples"]["history_length"])
    negs = torch.randint(1, inputs.n_items, (32,))
    sampler = Sampler(inputs.items["popularity"], cfg, 256, 32)
    grads, losses = [], []
    for bf16 in (False, True):
        step = Step(model, make_optimizer(model.parameters(), cfg, torch.device("cpu")),
                    sampler, LOSSES.get("softmax")(),
                    PositiveMask(inputs.positive_keys, inputs.n_users, inputs.n_items), cfg,
                    torch.device("cpu"), bf16, content=True)
        model.zero_grad(set_to_none=True)
        loss = step.loss(batch, negs)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                if p.grad is not None]))
    assert all(math.isfinite(v) for v in losses)
    assert abs(losses[1] - losses[0]) < 0.02 * abs(losses[0]), losses
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.98
