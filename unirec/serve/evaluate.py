"""``unirec evaluate``: the fitted model on the store's test split, ranked over every item.

The protocol is ``../shared/protocol/evaluate.py``'s: for each user with test interactions,
the top-K of the whole catalogue minus the items they had before the test window (train and
validation), scored with capped Recall, NDCG, HR, Precision and MAP@K, plus catalogue
coverage. The user vector is the one ``fit`` computed from the user's history up to the test
window, so nothing of the test slice leaks into the query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import StoreError
from unirec.metrics import ranking_metrics
from unirec.serve.recommender import Recommender
from unirec.store import Store
from unirec.store.csr import csr_from_pairs


def split_pairs(store: Store) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(test users, test items, earlier users, earlier items) as index arrays."""
    with store.connect() as con:
        test = con.sql("SELECT user_index AS u, item_index AS i FROM samples "
                       "WHERE split = 'test'").fetchnumpy()
        before = con.sql("SELECT user_index AS u, item_index AS i FROM samples "
                         "WHERE split <> 'test'").fetchnumpy()
    return test["u"], test["i"], before["u"], before["i"]


def evaluate(store: str | Path = "unirec-store", k: int = 10,
             recs_out: str | Path | None = None) -> dict[str, Any]:
    """Ranking metrics at ``k`` on the test split; ``recs_out`` also writes the lists as a
    ``user_id,item_id,rank`` CSV (the protocol evaluator's input)."""
    rec = Recommender.load(store)
    tu, ti, bu, bi = split_pairs(Store(store))
    if len(tu) == 0:
        raise StoreError("the store has no test split to evaluate on: featurize with "
                         "split.test_fraction > 0 (and a split strategy other than none)")
    users = np.unique(tu)
    pos_t, pos_b = np.searchsorted(users, tu), np.searchsorted(users, bu)
    keep = (pos_b < len(users)) & (users[np.minimum(pos_b, len(users) - 1)] == bu)
    truth = csr_from_pairs(pos_t, ti, len(users))
    exclude = csr_from_pairs(pos_b[keep], bi[keep], len(users))
    idx, _ = rec.rank(rec.users[users], k, exclude)
    metrics = ranking_metrics(idx, *truth, k=k, n_items=rec.n_items,
                              exclude_indptr=exclude[0], exclude_indices=exclude[1])
    if recs_out is not None:
        _write_recs(rec, users, idx, Path(recs_out))
    return {"k": k, "users": int(len(users)), "items": rec.n_items,
            **{name: metrics[name] for name in (f"recall@{k}", f"ndcg@{k}", f"hr@{k}",
                                                f"precision@{k}", f"map@{k}", "coverage")},
            "train_violations": metrics["train_violations"]}


def _write_recs(rec: Recommender, users: np.ndarray, idx: np.ndarray, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows, cols = np.nonzero(idx > 0)
    pacsv.write_csv(pa.table({"user_id": rec.user_ids(users[rows]),
                              "item_id": rec.item_ids(idx[rows, cols]),
                              "rank": (cols + 1).astype(np.int64)}), str(path),
                    pacsv.WriteOptions(quoting_style="none"))
