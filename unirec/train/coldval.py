"""A cold-aware validation slice: some training items held out as if they were new.

Why: the warm validation slice (each user's latest interactions) says nothing about items the
model never trained on, and the content path that serves them can peak epochs before the
warm metric does (MovieLens cold_item tuning carve: cold Recall@10 0.355 after one epoch, 0.28
at the warm early stop). With ``train.cold_val_items`` > 0 a seeded share of the items with
at least ``MIN_COUNT`` training samples is hidden from training entirely (no sample, no
negative, no history slot, an id row that stays zero), and each epoch ranks only those items
for the users who met them (``val_cold_recall@K``, ``val_cold_ndcg@K``), as the cold_item
protocol does. Truth comes from the store's train and validation samples only, never test.
The held-out items are then served like new items (content only): use it to choose settings
(``unirec tune``, the bench), then fit again with it off for the chosen epoch count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from unirec.metrics import ranking_metrics, topk
from unirec.model.inputs import Inputs
from unirec.store import Store, serving_histories
from unirec.store.csr import csr_from_pairs

MIN_COUNT = 5  # the cold_item protocol's eligibility: enough interactions to measure


@dataclass
class ColdSlice:
    """The held-out items and who met them."""

    held: torch.Tensor  # (n_items,) bool
    items: np.ndarray  # (H,) held item indices, sorted: the only candidates
    users: np.ndarray  # (C,) user indices with a held-out item in train or validation
    history: np.ndarray  # (C, L) their serving history, held-out items removed
    truth: tuple[np.ndarray, np.ndarray]  # CSR over users of column indices into ``items``


def carve(store: Store, inp: Inputs, fraction: float, seed: int) -> ColdSlice | None:
    """Hold out ``fraction`` of the eligible items (seeded); None when none is eligible.

    Mutates ``inp``: the held items' popularity becomes 0, so the sampler never draws them
    and the id encoder treats them as never trained.
    """
    pop = inp.items["popularity"].numpy()
    with store.connect() as con:
        counts = con.execute("SELECT item_index, count(*) AS n FROM samples WHERE split = "
                             "'train' GROUP BY item_index ORDER BY item_index").fetchnumpy()
    eligible = counts["item_index"][counts["n"] >= MIN_COUNT].astype(np.int64)
    n = int(round(fraction * len(eligible)))
    if n == 0:
        return None
    items = np.sort(np.random.default_rng(seed).choice(eligible, n, replace=False))
    held = np.zeros(len(pop), bool)
    held[items] = True
    with store.connect() as con:
        con.register("_held", pa.table({"item_index": items}))
        pairs = con.execute("SELECT DISTINCT user_index, item_index FROM samples WHERE split IN "
                            "('train', 'val') AND item_index IN (SELECT item_index FROM _held) "
                            "ORDER BY user_index").fetchnumpy()
    users = np.unique(pairs["user_index"].astype(np.int64))
    rows = np.searchsorted(users, pairs["user_index"])
    cols = np.searchsorted(items, pairs["item_index"])
    hist = serving_histories(store, inp.manifest["samples"]["history_length"])[users]
    hist[held[hist]] = 0
    inp.items["popularity"][torch.from_numpy(held)] = 0
    return ColdSlice(torch.from_numpy(held), items, users, hist,
                     csr_from_pairs(rows, cols, len(users)))


def hide(held: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without samples of held-out items, and with them gone from histories."""
    keep = ~held[batch["item"].long()]
    out = {k: v[keep] for k, v in batch.items()}
    h = out["history"]
    out["history"] = h.masked_fill(held[h.long()], 0)
    return out


@torch.no_grad()
def validate_cold(model: torch.nn.Module, cs: ColdSlice, k: int, device: torch.device,
                  chunk: int = 1024) -> dict[str, float]:
    """Recall/NDCG@K ranking only the held-out items for the users who met them."""
    model.eval()
    item_vecs = model.item(torch.from_numpy(cs.items).to(device))
    recs = []
    for s in range(0, len(cs.users), chunk):
        users = torch.from_numpy(cs.users[s:s + chunk]).to(device)
        hist = torch.from_numpy(cs.history[s:s + chunk]).to(device)
        recs.append(topk((model.user(users, hist) @ item_vecs.T).float().cpu().numpy(), k))
    model.train()
    m = ranking_metrics(np.concatenate(recs), *cs.truth, k=k, n_items=len(cs.items))
    return {f"val_cold_{name}": m[name] for name in (f"recall@{k}", f"ndcg@{k}")}


