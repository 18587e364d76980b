"""The cold-aware validation slice: training items held out as if new, never a test item."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import copy_store, invoke
from safetensors.numpy import load_file

from unirec import Store
from unirec.model.inputs import gather_history, load_inputs
from unirec.model.outputs import selection_score
from unirec.train.coldval import carve, hide
from unirec.train.data import ShardStream


def _pairs(store: Store, where: str) -> set[tuple[int, int]]:
    got = store.sql(f"SELECT DISTINCT user_index, item_index FROM samples WHERE {where}")
    return set(zip(got["user_index"].to_list(), got["item_index"].to_list(), strict=True))


def test_slice_truth_comes_from_train_and_validation_never_test(synthetic_store) -> None:
    """Every truth pair is a train/validation pair; the held items' test pairs stay out."""
    st = Store(synthetic_store)
    inp = load_inputs(st)
    cs = carve(st, inp, 0.2, seed=0)
    assert cs is not None and len(cs.items) >= 5
    indptr, cols = cs.truth
    rows = np.repeat(np.arange(len(cs.users)), np.diff(indptr))
    truth = set(zip(cs.users[rows].tolist(), cs.items[cols].tolist(), strict=True))
    seen = _pairs(st, "split IN ('train', 'val')")
    test_only = {p for p in _pairs(st, "split = 'test'") - seen if p[1] in set(cs.items)}
    assert test_only, "the fixture must have test pairs on held items for this to mean much"
    assert truth <= seen and not truth & test_only
    assert truth == {p for p in seen if p[1] in set(cs.items.tolist())}
    # held items: never drawn as negatives, never in a validation history
    assert float(inp.items["popularity"][cs.held].sum()) == 0.0
    assert not np.isin(cs.history, cs.items).any()


def test_batches_lose_held_items_as_samples_and_in_histories(synthetic_store) -> None:
    st = Store(synthetic_store)
    inp = load_inputs(st)
    cs = carve(st, inp, 0.2, seed=1)
    batch = next(iter(ShardStream(inp.train_shards, batch_size=512, seed=0)))
    batch["history"] = gather_history(inp.sequence, batch["hend"], batch["hlen"],
                                      inp.manifest["samples"]["history_length"])
    assert cs.held[batch["item"].long()].any() and cs.held[batch["history"].long()].any()
    out = hide(cs.held, batch)
    assert not cs.held[out["item"].long()].any()
    assert not cs.held[out["history"].long()].any()
    assert len(out["item"]) == int((~cs.held[batch["item"].long()]).sum())


def test_selection_adds_the_cold_slice() -> None:
    assert selection_score({"train_loss": 2.0}, 10) == -2.0
    assert selection_score({"train_loss": 2.0, "val_ndcg@10": 0.2}, 10) == 0.2
    row = {"train_loss": 2.0, "val_ndcg@10": 0.2, "val_cold_ndcg@10": 0.1}
    assert abs(selection_score(row, 10) - 0.3) < 1e-12


def test_fit_reports_the_cold_slice_and_never_trains_held_ids(tmp_path, synthetic_store) -> None:
    """Through the CLI: each epoch's row has the cold metrics; held items' id rows stay 0
    (without the refit; with it, the default, the refit trains them: see below)."""
    store = copy_store(synthetic_store, tmp_path / "store")
    out = invoke("fit", "--store", store, "--epochs", "2", "--set", "train.cold_val_items=0.2",
                 "--set", "train.batch_size=256", "--set", "train.dim=16",
                 "--set", "train.refit=false")
    assert out.exit_code == 0, out.output
    rows = [json.loads(x) for x in (store / "model" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["val_cold_recall@10"] <= 1.0 and "val_cold_ndcg@10" in r for r in rows)
    st = Store(store)
    cs = carve(st, load_inputs(st), 0.2, seed=0)
    table = load_file(str(store / "model" / "model.safetensors"))["item.ids.table.weight"]
    assert np.abs(table[cs.items]).max() == 0.0
    assert np.abs(table[np.setdiff1d(np.arange(1, len(table)), cs.items)]).max() > 0.0
    assert torch.is_tensor(cs.held)
    # train.refit (default): the slice chose the epoch count; the served model then trains
    # on every item, the held ones included
    refit = copy_store(synthetic_store, tmp_path / "refit")
    out = invoke("fit", "--store", refit, "--epochs", "2", "--set", "train.cold_val_items=0.2",
                 "--set", "train.batch_size=256", "--set", "train.dim=16")
    assert out.exit_code == 0, out.output
    table = load_file(str(refit / "model" / "model.safetensors"))["item.ids.table.weight"]
    assert (np.abs(table[cs.items]).max(axis=1) > 0).all()
