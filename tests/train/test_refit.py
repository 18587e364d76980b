"""``train.refit`` (default on): after early stopping picks the epoch count, a fresh model
trains on train + validation for that many epochs and is what gets served.

Why: validation is each user's latest interactions, the most like what comes next; early
stopping needs them only to choose the epoch count. Through the CLI on the synthetic store.
"""

from __future__ import annotations

import json

import numpy as np
from conftest import copy_store, invoke

from unirec import Store


def _fit(src, dst, *sets: str) -> dict:
    store = copy_store(src, dst)
    out = invoke("fit", "--store", store, "--epochs", "4", "--set", "train.batch_size=256",
                 *sets)
    assert out.exit_code == 0, out.output
    ev = invoke("evaluate", "--store", store, "--format", "json")
    assert ev.exit_code == 0, ev.output
    summary = json.loads((store / "model" / "config.json").read_text())["summary"]
    return {"store": store, "summary": summary, "test": json.loads(ev.output)}


def _counts(store, splits: str) -> np.ndarray:
    got = Store(store).sql(f"SELECT item_index, sum(weight) AS w FROM samples WHERE split IN "
                           f"({splits}) GROUP BY item_index")
    pop = np.zeros(len(np.load(store / "model" / "popularity.npy")), np.float32)
    pop[got["item_index"].to_numpy()] = got["w"].to_numpy()
    return pop


def test_refit_trains_on_validation_for_the_kept_epochs(synthetic_store, tmp_path) -> None:
    """The served model is the refit: it ran the kept epoch count, and what it learnt from
    (the popularity served as ``--fallback popular``) includes the validation interactions;
    with ``train.refit=false`` it is the best epoch's model, trained on train only."""
    on = _fit(synthetic_store, tmp_path / "on")
    off = _fit(synthetic_store, tmp_path / "off", "--set", "train.refit=false")
    assert on["summary"]["refit_epochs"] == on["summary"]["best_epoch"] >= 1
    assert off["summary"]["refit_epochs"] == 0
    train_val, train = _counts(on["store"], "'train', 'val'"), _counts(on["store"], "'train'")
    assert not np.array_equal(train_val, train)
    np.testing.assert_allclose(np.load(on["store"] / "model" / "popularity.npy"), train_val)
    np.testing.assert_allclose(np.load(off["store"] / "model" / "popularity.npy"), train)
    # the same kept epoch, more (and later) data: not worse on the store's test split
    print(on["test"]["recall@10"], off["test"]["recall@10"])
    assert on["test"]["recall@10"] >= 0.95 * off["test"]["recall@10"]
