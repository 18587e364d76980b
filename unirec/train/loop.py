"""The training loop, top to bottom: stream shards -> gather features on the device ->
forward -> loss -> AdamW step; validate with full ranking each epoch; early-stop;
checkpoint every epoch; write the model and its embeddings.

Under ``torchrun`` each rank reads its own shards (DDP: gloo on CPU, NCCL on GPU) and
rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from unirec.config import Config, TrainConfig
from unirec.errors import ConfigError
from unirec.model import workdir
from unirec.model.checkpoint import save_checkpoint, save_weights
from unirec.model.inputs import Inputs, gather_history, load_inputs
from unirec.model.outputs import write_outputs
from unirec.model.towers import TwoTower
from unirec.store import Store
from unirec.store.guard import resolve_store, store_lock
from unirec.train import warm
from unirec.train.coldval import carve, validate_cold
from unirec.train.data import ShardStream
from unirec.train.losses import LOSSES
from unirec.train.rank import fit_ranker, refit_ranker
from unirec.train.rank.rescore import Judge, add_rescorer
from unirec.train.refit import refit_epochs, refit_inputs
from unirec.train.refit_ahead import RefitAhead, wanted
from unirec.train.selection import epoch_verdict, validate
from unirec.train.step import PositiveMask, Step, make_optimizer


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class Sampler:
    """Extra negatives and the logQ terms: log of how often each item shows up as one."""

    def __init__(self, popularity: torch.Tensor, cfg: TrainConfig, batch: int, n_neg: int):
        self.n_items = len(popularity)
        pop = popularity.clone().double()
        pop[0] = 0
        self.p_batch = pop / pop.sum().clamp(min=1e-12)  # in-batch items follow popularity
        # only items seen as positives: one that never is would only ever be pushed down
        uniform = (pop > 0).double()
        if not uniform.any():
            uniform[1:] = 1.0
        self.p_neg = (pop if cfg.negative_sampler == "popularity" else uniform)
        self.p_neg = self.p_neg / self.p_neg.sum()
        expected = batch * self.p_batch + n_neg * self.p_neg  # expected count as a negative
        self.logq = torch.log(expected.clamp(min=1e-12)).float()
        self.n_neg = n_neg

    def sample(self) -> torch.Tensor:
        if self.n_neg == 0:
            return torch.zeros(0, dtype=torch.long, device=self.p_neg.device)
        return torch.multinomial(self.p_neg.float(), self.n_neg, replacement=True)


def _positive_mask(keys: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                   n_items: int) -> torch.Tensor:
    """(B, C): True where items[c] is among users[b]'s training positives: the plain
    search-per-pair form, kept as the reference ``step.PositiveMask`` must equal."""
    q = users.unsqueeze(1) * n_items + items.unsqueeze(0)
    pos = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
    return keys[pos] == q


def fit(store: str | Path = "unirec-store", config: Config | None = None, *,
        resume: bool = False, progress: bool | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        warm_start: bool = False) -> dict[str, Any]:
    """Train the two-tower model on ``store``; swap the result in as ``store/model``.

    Returns the summary. The previous model keeps being served until the new one is
    complete (``model.workdir``); rank 0 holds the store's write lock throughout.
    ``on_epoch`` (rank 0) sees each epoch's metrics row after validation; an exception it
    raises ends the fit there (``unirec tune`` prunes bad trials this way).
    ``warm_start`` continues the current model after ``featurize --append``
    (``train.warm``): old weights kept, trained on the appended samples plus a replay share.
    """
    if warm_start and resume:
        raise ConfigError("--warm-start and --resume both continue a model: pick one")
    st = Store(store)
    rank, world = _distributed()
    lock = store_lock(resolve_store(st.path), "fit") if rank == 0 else contextlib.nullcontext()
    with lock:
        return _fit(st, (config or Config()).train, resume, progress, rank, world, on_epoch,
                    warm_start)


def _stepper(model: TwoTower, opt: torch.optim.Optimizer, inp: Inputs, cfg: TrainConfig,
             device: torch.device, rank: int, world: int, held: torch.Tensor | None,
             batched: bool = True) -> tuple[Any, Step, Any]:
    """The (DDP/compiled) net, the step and the shard stream of one training run (the
    first, the refit, and the refit's own process alike); ``batched=False``: a stream of
    single samples, for a warm start to batch."""
    positives = PositiveMask(inp.positive_keys.to(device), inp.n_users, inp.n_items)
    n_neg = cfg.negatives if cfg.loss == "softmax" else cfg.negative_ratio
    sampler = Sampler(inp.items["popularity"].to(device), cfg, cfg.batch_size, n_neg)
    # without ids, items are content already; without content features there is no content
    # path to train alone
    content = cfg.content_loss > 0 and cfg.item_id and len(model.item.encoders) > 0
    net: Any = DistributedDataParallel(model) if world > 1 else model
    if cfg.compile is True or (cfg.compile == "auto" and device.type == "cuda"):
        net = torch.compile(net)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    step = Step(net, opt, sampler, LOSSES.get(cfg.loss)(), positives, cfg, device, bf16,
                model=model, held=held, content=content)
    stream = ShardStream(inp.train_shards, rank=rank, world_size=world, seed=cfg.seed,
                         batch_size=cfg.batch_size if batched else None, drop_last=False)
    return net, step, stream


def _train_epoch(net: Any, step: Step, stream: ShardStream, inp: Inputs, epoch: int,
                 device: torch.device, world: int, progress: bool | None, desc: str,
                 abort: Callable[[], bool] | None = None) -> tuple[float, int, float]:
    """One pass over the stream: (summed loss, samples, seconds); ``abort`` (asked before
    each step) ends it early (``refit_ahead``: the epoch is not wanted any more)."""
    sequence, width = inp.sequence.to(device), inp.manifest["samples"]["history_length"]
    stream.set_epoch(epoch)
    started, seen, total = time.perf_counter(), 0, 0.0
    bar = tqdm(desc=desc, unit=" samples", leave=False,
               disable=None if progress is None else not progress)
    with Join([net]) if world > 1 else contextlib.nullcontext():
        for batch in stream:
            if abort is not None and abort():
                break
            # histories by reference: gathered on the device before the step (and hide)
            batch["history"] = gather_history(sequence, batch["hend"].to(device),
                                              batch["hlen"].to(device), width)
            out_step = step(batch)
            if out_step is None:  # every sample was a held-out cold item
                continue
            loss, n = out_step
            total += loss.item() * n
            seen += n
            bar.update(n)
    bar.close()
    if world > 1:  # every rank's samples: ranks' shares differ by up to a block or shard
        sums = torch.tensor([total, seen], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        total, seen = float(sums[0]), int(sums[1])
    return total, seen, time.perf_counter() - started


def _fit(st: Store, cfg: TrainConfig, resume: bool, progress: bool | None, rank: int,
         world: int, on_epoch: Callable[[dict[str, Any]], None] | None,
         warm_start: bool = False) -> dict[str, Any]:
    device = _device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    _seed(cfg.seed + rank)
    plan = warm.prepare(st, cfg) if warm_start else None
    inp = load_inputs(st)
    cold = carve(st, inp, cfg.cold_val_items, cfg.seed) if cfg.cold_val_items > 0 else None
    held = cold.held.to(device) if cold is not None else None
    model = TwoTower(inp.manifest, inp.users, inp.items, inp.text, inp.image,
                     inp.user_trained, cfg).to(device)
    grown = warm.load_grown(model, plan, st, cfg) if plan is not None else {}
    opt = make_optimizer(model.parameters(), cfg if plan is None else
                         cfg.model_copy(update={"lr": cfg.warm_start.lr}), device)
    out = workdir.work_dir(st)
    ckpt = out / workdir.CHECKPOINT
    train = cfg.model_dump(mode="json")
    state: dict[str, Any] = workdir.start(st, model, opt, resume=resume, rank=rank,
                                          train=train) or \
        {"epoch": 0, "best": -math.inf, "bad_epochs": 0, "history": []}
    state["train"] = train
    if plan is not None:
        state["warm_start"] = warm.summary(plan, grown)
    # a warm start's stream is batched by WarmStream, which mixes in the replayed samples
    net, step, stream = _stepper(model, opt, inp, cfg, device, rank, world, held,
                                 batched=plan is None)
    if plan is not None:
        stream = warm.WarmStream(stream, plan.start, cfg.warm_start.replay, cfg.seed,
                                 cfg.batch_size)
    last = cfg.warm_start.epochs if plan is not None else cfg.epochs
    # train.refit_parallel: the refit's own process, ended on the way out whatever happens
    with (RefitAhead.start(st.path, cfg, out / "refit-ahead.safetensors")
          if wanted(cfg, device, world, resume, plan is not None, inp)
          else contextlib.nullcontext()) as ahead:
        for epoch in range(state["epoch"] + 1, last + 1):
            total, seen, train_s = _train_epoch(net, step, stream, inp, epoch, device, world,
                                                progress, f"epoch {epoch}")
            stop = torch.zeros(1)
            if rank == 0:
                row = {"epoch": epoch, "train_loss": total / max(seen, 1), "samples": seen,
                       "samples_per_s": seen / train_s, "train_seconds": round(train_s, 3),
                       **validate(model, inp, cfg.eval_k, device)}
                if cold is not None:
                    row.update(validate_cold(model, cold, cfg.eval_k, device))
                improved = epoch_verdict(state, row, cfg.eval_k, cfg.min_gain)
                if ahead is not None:
                    ahead.epoch(epoch, improved)
                if improved:
                    save_weights(out / "best.safetensors", model, {"epoch": str(epoch)})
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                save_checkpoint(ckpt, model, opt, state)
                stop[0] = float(state["bad_epochs"] >= (cfg.patience if plan is None else
                                                        cfg.warm_start.patience))
                if on_epoch is not None:
                    on_epoch(row)
            if world > 1:
                dist.broadcast(stop, src=0)
            if stop.item():
                break
        if ahead is not None:  # the refit's own process can stop at the kept epoch now
            ahead.stop_at(refit_epochs(state, cfg.refit, inp, cfg.eval_k))
        # the ranker is trained and judged on the retrieval model before its refit: the
        # validation users that judge it are unseen by both (docs/ranking.md)
        ranker = fit_ranker(st, model, inp, cfg, device, out, warm=plan is not None) \
            if rank == 0 and (out / "best.safetensors").is_file() else None
        # train.rank.rescore is judged on the same retrieval model, before its refit
        rescoring = ranker is not None and cfg.rank.rescore is not False
        skipped_by = "fit --warm-start" if plan is not None else "torchrun" if world > 1 \
            else None
        judge = Judge.build(model, inp, cfg, device) \
            if rescoring and skipped_by is None else None
        train_inp = inp
        if plan is None:  # a warm start continues the served model: no fresh refit
            refit, inp = _refit(st, cfg, state, inp, device, rank, world, progress, model,
                                ahead)
            if refit is not model and ranker is not None:
                ranker = refit_ranker(st, refit, inp, cfg, device, out, ranker)
            model = refit
        if rescoring and ranker is not None:
            add_rescorer(ranker, st, train_inp, cfg, device, out, judge, progress, skipped_by)
        summary: dict[str, Any] = {}
        if rank == 0:
            summary = write_outputs(st, model, inp, cfg, state, device, ranker)
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return summary


def refit_model(st: Store, inp: Inputs, cfg: TrainConfig, device: torch.device,
                rank: int = 0) -> tuple[TwoTower, Inputs]:
    """The refit's fresh model and its train + validation inputs, seeded as every refit is
    (here and in ``refit_ahead``'s process, which must build the same bits)."""
    _seed(cfg.seed + rank)
    inp = refit_inputs(st, inp)
    return TwoTower(inp.manifest, inp.users, inp.items, inp.text, inp.image,
                    inp.user_trained, cfg).to(device), inp


def train_refit(st: Store, inp: Inputs, cfg: TrainConfig, device: torch.device, epochs: int,
                rank: int = 0, world: int = 1, progress: bool | None = None,
                ahead: RefitAhead | None = None, desc: str = "refit"
                ) -> tuple[TwoTower, Inputs, bool]:
    """The refit's model trained ``epochs`` epochs on train + validation: taken from
    ``ahead``'s process when it trained it beside the first run, else trained here in
    order. (model, its inputs, whether it came from the second process)."""
    model, inp = refit_model(st, inp, cfg, device, rank)
    if ahead is not None and ahead.finish(epochs, model):
        return model, inp, True
    if ahead is not None:
        print(f"unirec: the refit's own process failed (exit code {ahead.exitcode}); "
              "refitting in order", file=sys.stderr)
    opt = make_optimizer(model.parameters(), cfg, device)
    net, step, stream = _stepper(model, opt, inp, cfg, device, rank, world, None)
    for epoch in range(1, epochs + 1):
        _train_epoch(net, step, stream, inp, epoch, device, world, progress, f"{desc} {epoch}")
    return model, inp, False


def _refit(st: Store, cfg: TrainConfig, state: dict[str, Any], inp: Inputs,
           device: torch.device, rank: int, world: int, progress: bool | None,
           model: TwoTower, ahead: RefitAhead | None = None) -> tuple[TwoTower, Inputs]:
    """``train.refit``: a fresh model from the same seed on train + validation (and any
    cold-slice items) for the kept epoch count, saved as the best weights; else as given.
    With ``ahead`` (``train.refit_parallel``) that model was trained beside the first run:
    its weights are taken from there."""
    epochs = torch.tensor([float(refit_epochs(state, cfg.refit, inp, cfg.eval_k)
                                 if rank == 0 else 0)])
    if world > 1:
        dist.broadcast(epochs, src=0)
    if not epochs.item():
        if ahead is not None:
            ahead.finish(0, model)
        return model, inp
    model, inp, parallel = train_refit(st, inp, cfg, device, int(epochs.item()), rank, world,
                                       progress, ahead)
    if parallel:
        state["refit_parallel"] = True
    state["refit_epochs"] = int(epochs.item())
    if rank == 0:
        save_weights(workdir.work_dir(st) / "best.safetensors", model,
                     {"epoch": str(state["refit_epochs"]), "refit": "train+val"})
    return model, inp
