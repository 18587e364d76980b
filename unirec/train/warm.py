"""``fit --warm-start``: continue the served model on a store that ``featurize --append`` grew.

An append keeps every index and fitted statistic (``unirec.featurize.append``), so each old
weight still means what it meant: the model's embedding tables only gain rows at the end
(new users, items, categorical values) and every other weight keeps its shape. The warm
start loads the old weights into the grown model, starts each new item's id row as the mean
of its most similar known items by content (the item tower with ids hidden, as a cold item
is served; zero when items have no content), new users and values at zero, and trains on
the appended samples plus a fresh ``train.warm_start.replay`` share of the older ones each
epoch, early-stopped on the store's validation slice like any fit.

What cannot be mapped is refused in one line naming what to run: no model, a model of a
store rebuilt since (not appended to), statistics refitted by ``--refit-stats``, an
architecture setting changed, or a weight whose shape is not an extension of the old one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirec.config import TrainConfig
from unirec.errors import ConfigError, NotFittedError, StoreError
from unirec.model.checkpoint import load_grown_weights
from unirec.model.folder import appends_since
from unirec.model.towers import TwoTower
from unirec.store import Store
from unirec.store.shards import rechunk
from unirec.train.data import ShardStream

# settings that shape the network or what its weights mean: a warm start keeps them
ARCHITECTURE = ("dim", "fusion", "history", "user_id", "item_id", "drop_features", "loss",
                "temperature")


@dataclass
class WarmPlan:
    """What the warm start continues from: the old weights, and where new samples begin."""

    weights: Path
    start: int  # samples at or after this interaction position are new
    appends: int  # how many appends the model missed


def _again(store: Store, why: str) -> StoreError:
    return StoreError(f"cannot warm-start: {why}; run `unirec fit --store {store.path}` "
                      "(a full fit)")


def prepare(store: Store, cfg: TrainConfig) -> WarmPlan:
    """Check that the model in ``store/model`` can be continued on ``store``; say why not."""
    model = store.path / "model"
    if not (model / "model.safetensors").is_file() or not (model / "bundle.json").is_file():
        raise NotFittedError(f"no model to warm-start from in {str(store.path)!r}: run `unirec "
                             f"fit --store {store.path}` first")
    saved = json.loads((model / "config.json").read_text())["train"]
    now = cfg.model_dump(mode="json")
    changed = [f"train.{k} {saved.get(k)!r} -> {now[k]!r}" for k in ARCHITECTURE
               if saved.get(k) != now[k]]
    if changed:
        raise ConfigError(f"cannot warm-start: the model was trained with other settings "
                          f"({', '.join(changed)}); run `unirec fit --store {store.path}` "
                          "without --warm-start, or keep them")
    trained_on = json.loads((model / "bundle.json").read_text())["store"]
    missed = appends_since(store.manifest, trained_on)
    if missed == []:
        raise StoreError("cannot warm-start: the model is already trained on everything in "
                         f"the store; append first (`unirec featurize --append DATA --store "
                         f"{store.path}`)")
    if missed is None:
        raise _again(store, "the store was featurized again (not appended to) since the model "
                     "was trained, so its indices may have moved")
    if any(a.get("refit_stats") for a in missed):
        raise _again(store, "the store's statistics were refitted (--refit-stats) since the "
                     "model was trained, so its inputs changed meaning")
    return WarmPlan(model / "model.safetensors", int(missed[0]["positions"]["interactions"][0]),
                    len(missed))


@torch.no_grad()
def load_grown(model: TwoTower, plan: WarmPlan, store: Store, cfg: TrainConfig) -> dict[str, int]:
    """The old weights in the grown ``model`` (``model.checkpoint.load_grown_weights``), then
    new item id rows from content. Returns rows added per table."""
    try:
        grown = load_grown_weights(plan.weights, model)
    except ValueError as exc:
        raise _again(store, str(exc)) from None
    n_old = model.item_table.num_embeddings - grown.get("item_table.weight", 0)
    if n_old < model.item_table.num_embeddings and len(model.item.encoders):
        _items_from_content(model, n_old, cfg.warm_start.similar_items)
    return grown


@torch.no_grad()
def _items_from_content(model: TwoTower, n_old: int, k: int, chunk: int = 2048) -> None:
    """New item id rows = mean id row of the ``k`` known items nearest by content vector."""
    was = model.training
    model.eval()
    device = model.item_table.weight.device
    n = model.item_table.num_embeddings

    def content(lo: int, hi: int) -> torch.Tensor:
        idx = torch.arange(lo, hi, device=device)
        return model.item.encode(model.item.gather(idx), None)

    known = torch.cat([content(s, min(s + chunk, n_old)) for s in range(1, n_old, chunk)])
    k = min(k, len(known))
    table = model.item_table.weight
    for s in range(n_old, n, chunk):
        e = min(s + chunk, n)
        near = (content(s, e) @ known.T).topk(k, dim=1).indices + 1  # row 0 is padding
        table[s:e] = table[near].mean(dim=1)
    model.train(was)


class WarmStream:
    """Training batches of the appended samples plus a fresh replay draw of older ones.

    Blocks stream from the same shards as a full fit; the keep mask is vectorised per block
    (a hash of each sample's position and the epoch, so each epoch replays another share),
    then blocks are re-cut to ``batch_size``.
    """

    def __init__(self, stream: ShardStream, start: int, replay: float, seed: int,
                 batch_size: int) -> None:
        self.stream, self.start, self.replay = stream, start, replay
        self.seed, self.batch_size, self.epoch = seed, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def _kept(self) -> Iterator[dict[str, np.ndarray]]:
        for block in self.stream:
            pos = block["position"].numpy()
            keep = pos >= self.start
            if self.replay > 0:
                keep |= _uniform(pos, self.seed, self.epoch) < self.replay
            yield {k: v.numpy()[keep] for k, v in block.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in rechunk(self._kept(), self.batch_size):
            yield {k: torch.from_numpy(v) for k, v in batch.items()}


def _uniform(pos: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A deterministic uniform [0, 1) per (position, seed, epoch): splitmix64's finaliser."""
    with np.errstate(over="ignore"):
        x = pos.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + \
            np.uint64((seed * 1_000_003 + epoch) % 2**63)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def summary(plan: WarmPlan, grown: dict[str, int]) -> dict[str, Any]:
    """What the fit summary and model/config.json record about the warm start."""
    return {"from_position": plan.start, "appends": plan.appends, "rows_added": grown}
