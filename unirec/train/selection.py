"""Model selection for a two-tower run: full-ranking validation each epoch and early
stopping's verdict on it. Retrieval's loop and the ranking stage's rescoring model both
choose their epoch by these, so one rule decides what "best" means for both."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unirec.metrics import ranking_metrics, topk
from unirec.model.inputs import Inputs
from unirec.model.outputs import selection_score
from unirec.model.towers import TwoTower
from unirec.store.csr import csr_rows


def epoch_verdict(state: dict[str, Any], row: dict[str, Any], k: int, min_gain: float
                  ) -> bool:
    """Early stopping's bookkeeping for one validated epoch (``row``, with its ``epoch``):
    the best score, the epochs without a gain worth one, the history; True for a new best
    (the caller keeps its weights). The rescoring model's run stops by the same rule."""
    score = selection_score(row, k)
    # the first epoch always counts: -train_loss (no validation slice) is below -1
    improved = not state["history"] or score > state["best"]
    state["bad_epochs"] = _bad_epochs(state, score, min_gain)
    state.update(epoch=row["epoch"], best=score if improved else state["best"])
    state["history"].append(row)
    return improved


def _bad_epochs(state: dict[str, Any], score: float, min_gain: float) -> int:
    """Epochs since the last gain worth an epoch: a score at least ``min_gain`` x |score| above
    the last one that counted. Smaller gains still keep the best weights (the caller saves
    any improvement); they just buy no more patience, so a flat curve stops."""
    ref = state.get("best_counted", state["best"]) if state["history"] else None
    if ref is None or score > ref + min_gain * abs(ref):
        state["best_counted"] = score
        return 0
    return state["bad_epochs"] + 1


@torch.no_grad()
def validate(model: TwoTower, inp: Inputs, k: int, device: torch.device, chunk: int = 1024
             ) -> dict[str, float]:
    """Full-ranking Recall/NDCG@K over every warm item for users with a validation slice."""
    if not len(inp.val_users):
        return {}
    model.eval()
    items = torch.arange(inp.n_items, device=device)
    # warm validation ranks the items training saw: new items (no training sample) are
    # rarely in a validation slice, so ranking them would make early stopping reward hiding
    # them; the cold slice (train.cold_val_items) is what measures new items
    warm = (inp.items["popularity"] > 0).numpy()
    item_vecs = torch.cat([model.item(items[i:i + chunk]) for i in range(0, len(items), chunk)])
    recs = []
    for s in range(0, len(inp.val_users), chunk):
        users = torch.from_numpy(inp.val_users[s:s + chunk]).to(device)
        hist = torch.from_numpy(inp.val_history[s:s + chunk]).to(device)
        scores = (model.user(users, hist) @ item_vecs.T).float().cpu().numpy()
        scores[:, ~warm] = -np.inf  # the padding item, and items no training sample has
        rows = np.arange(s, min(s + chunk, len(inp.val_users)))
        recs.append(topk(scores, k, exclude=csr_rows(inp.val_exclude, rows)))
    model.train()
    m = ranking_metrics(np.concatenate(recs), *inp.val_truth, k=k, n_items=inp.n_items - 1)
    return {f"val_{name}": value for name, value in m.items() if "@" in name or
            name == "coverage"}
