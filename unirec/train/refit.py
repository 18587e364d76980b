"""Refit on train + validation for the epoch count early stopping chose (``train.refit``).

Why: the validation slice is each user's latest interactions, the ones most like what comes
next, and early stopping only needs them to pick the epoch count. Once it has, a model
trained from the same seed on train + validation for that many epochs learns from them too
(MovieLens-100K, docs/quality.md). The refit also trains on the items a cold validation slice
(``train.cold_val_items``) held out, so that slice can pick settings without costing those
items their ids in the served model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from unirec.model.inputs import Inputs
from unirec.model.outputs import selection_score
from unirec.store import Store


def refit_inputs(store: Store, inp: Inputs) -> Inputs:
    """``inp`` with validation samples counted as training: popularity (negatives, logQ,
    which ids are trained), the "never a negative" keys, trained users, and the shards."""
    with store.connect() as con:
        pairs = con.execute("SELECT user_index, item_index, weight FROM samples "
                            "WHERE split IN ('train', 'val')").fetchnumpy()
    users = pairs["user_index"].astype(np.int64)
    item = pairs["item_index"].astype(np.int64)
    pop = np.bincount(item, weights=pairs["weight"].astype(np.float64), minlength=inp.n_items)
    items = {**inp.items, "popularity": torch.from_numpy(pop.astype(np.float32))}
    keys = np.unique(users * inp.n_items + item)
    trained = np.zeros(inp.n_users, bool)
    trained[users] = True
    files = inp.manifest["shards"].get("val", {}).get("files", [])
    return replace(inp, items=items, positive_keys=torch.from_numpy(keys),
                   user_trained=torch.from_numpy(trained),
                   train_shards=inp.train_shards + [store.path / "shards" / f for f in files])


def refit_epochs(state: dict, enabled: bool, inp: Inputs, k: int) -> int:
    """How many epochs the refit runs: the kept epoch, or 0 (no refit) when it is off or
    there was no validation slice to choose it (nor anything to add)."""
    if not enabled or not len(inp.val_users) or not state["history"]:
        return 0
    if f"val_ndcg@{k}" not in state["history"][0]:
        return 0
    return int(max(state["history"], key=lambda r: selection_score(r, k))["epoch"])
