"""Why an item is recommended: per-item contributions through the trained towers.

A recommendation's score is ``cos(u, v)``: ``u`` the user tower's vector (features, id and
recent history, fused), ``v`` the item tower's. For each recommended item this module says

- **history**: which of the user's recent items pull it up most. ``contribution`` is the
  leave-one-out delta: the score minus the score with that item removed from the history
  (every occurrence; the history encoder re-run without it). ``similarity`` is the plain
  dot-product view, the cosine of the history item's vector and the recommended item's
  (numpy, from the bundle), and ``attention`` the history encoder's attention weight on it
  (``attention`` mode only).
- **features** (``user_feature`` / ``item_feature``): which feature tokens matter most.
  ``contribution`` is the leave-one-token-out delta: the score minus the score with that
  token zeroed before fusion. A zeroed categorical token is exactly what a missing value
  (vocabulary index 0) encodes, so for those the delta is "what this value adds". With the
  category affinity (``unirec.model.affinity``), one more item token, ``category_affinity``:
  its term, exactly (it is added after fusion), non-zero only for items without training
  interactions; its value is the item's categories.

How the deltas relate to the score (checked by the tests; ``explain``'s dicts carry every
term, the long rows of the CLI and the ``explanations`` table the ``--top`` largest): with
``baseline`` the score with every token of both towers zeroed,

    score == baseline + sum(user_feature deltas) + sum(item_feature deltas) + interaction

where ``interaction`` is what the fusion's non-linearity does beyond one-at-a-time effects
(zero for a linear fusion). ``recomputed`` is the score the towers give here; it equals the
served numpy score (``score``) up to float rounding, which is what ties an explanation to
the answer it explains.

Ranking stage (docs/ranking.md): when the model has one in use, the items explained are
the re-ranked list as served, ``score`` stays the retrieval score these deltas decompose,
and ``explain``'s dicts carry the ranker's score in ``ranking`` (``{"score", "stage"}``;
None without a ranking stage). The ranker's own reasons are not decomposed here.

This imports torch (the towers); the known-user ``recommend`` path never does. Cost: one
batched pass per user of (tokens + 2 + history length) user-tower fusions and, per item,
(tokens + 2) item-tower fusions: ~3 ms per recommendation of a top-10 on one CPU thread
(``bench/explain_speed.py``, also run by ``make bench``'s serving step).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import QueryError
from unirec.serve.explain.core import Explained, Explainer, explainer
from unirec.serve.explain.forms import COLUMNS, KINDS, nested, rows
from unirec.serve.recommender import Recommender

__all__ = ["COLUMNS", "KINDS", "Explained", "Explainer", "blocks", "explain", "explain_rows",
           "explainer", "nested", "rows", "write_explanations"]


def _rank_of(rec: Recommender, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``items`` for ``user`` (as served) and their ranks in the user's full ranking
    with seen items left out (a seen item is ranked as if it were not): 1 + the unseen items
    that score higher."""
    scores = rec.items @ rec.users[user]  # the product recommend computes, bit for bit
    mine = scores[items].astype(np.float32)
    scores[0] = -np.inf
    scores[rec.seen(np.array([user]))[1]] = -np.inf
    return mine, 1 + (scores[None, :] > mine[:, None]).sum(1)


def explain(user: Any, items: list[Any] | None = None, k: int = 10, *,
            store: str | Path = "unirec-store", exclude_seen: bool = True
            ) -> list[dict[str, Any]]:
    """Why ``items`` (by default: ``user``'s top-``k``) are recommended to ``user``.

    One dict per item, best first: ``score`` (as served), ``history`` (each recent item's
    leave-one-out ``contribution``, ``similarity`` and ``attention``), ``user_features`` and
    ``item_features`` (leave-one-token-out ``contribution``), ``baseline``, ``interaction``,
    ``recomputed`` and ``ranking`` (the ranking stage's score; None without one). See the
    module docstring.
    """
    ex, users, idx, scores, ranks = _query(store, [user], items, k, exclude_seen)
    out = nested(ex.explain(users, idx, scores, ranks), ex.rec)[0]
    if items is None and ex.rec.stage_ranker("auto") is not None:
        ranked = ex.rec.recommend_index(users, k, exclude_seen=exclude_seen)[1][0]
        for row, value in zip(out, ranked[~np.isnan(ranked)], strict=True):
            row["ranking"] = {"score": float(value), "stage": "rank"}
    return out


def explain_rows(users: list[Any], items: list[Any] | None = None, k: int = 10, top: int = 3,
                 *, store: str | Path = "unirec-store", exclude_seen: bool = True
                 ) -> dict[str, np.ndarray]:
    """``explain`` for several users as long rows (``COLUMNS``): what the CLI prints and the
    ``explanations`` table holds."""
    ex, u, idx, scores, ranks = _query(store, users, items, k, exclude_seen)
    return rows(ex.explain(u, idx, scores, ranks), ex.rec, top)


def _served(rec: Recommender, users: np.ndarray, k: int, exclude_seen: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """The served top-``k`` (re-ranked when a ranking stage is in use) with their retrieval
    scores: what the deltas here decompose."""
    idx, scores = rec.recommend_index(users, k, exclude_seen=exclude_seen)
    if rec.stage_ranker("auto") is None:
        return idx, scores
    cos = np.einsum("nd,nkd->nk", rec.users[users], rec.items[np.maximum(idx, 0)])
    return idx, np.where(idx > 0, cos, np.nan).astype(np.float32)


def _query(store: str | Path, users: list[Any], items: list[Any] | None, k: int,
           exclude_seen: bool) -> tuple[Explainer, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray]:
    from unirec.serve.api import _unknown_message

    ex = explainer(store)
    rec = ex.rec
    index = rec.user_index(list(users))
    if (index < 0).any():
        raise QueryError(_unknown_message(rec, users[int(np.argmax(index < 0))]))
    if items is None:
        idx, scores = _served(rec, index, k, exclude_seen)
        return ex, index, idx, scores, np.broadcast_to(np.arange(1, k + 1), idx.shape)
    item_idx = rec.item_index(list(items))
    scores, ranks = map(np.stack, zip(*(_rank_of(rec, int(u), item_idx) for u in index),
                                      strict=True))
    return ex, index, np.broadcast_to(item_idx, scores.shape), scores, ranks


def blocks(store: str | Path, k: int = 10, top: int = 3, *, exclude_seen: bool = True,
           chunk: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Every user's top-``k`` explained, ``chunk`` users at a time (``rows`` columns)."""
    ex = explainer(store)
    rec = ex.rec
    for lo in range(1, rec.n_users + 1, chunk):
        users = np.arange(lo, min(lo + chunk, rec.n_users + 1))
        idx, scores = _served(rec, users, k, exclude_seen)
        yield rows(ex.explain(users, idx, scores), rec, top)


def write_explanations(store: str | Path, k: int = 10, top: int = 3, *,
                       exclude_seen: bool = True) -> int:
    """Every user's top-``k`` explained into the store's ``explanations`` table (``COLUMNS``,
    the rows ``unirec explain`` prints); returns the row count.

    Blocks of users stream into a Parquet file beside the database first: explaining reads
    the store, and DuckDB refuses a read connection while the writer's is open.
    """
    import tempfile

    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from unirec.store import write_table

    with tempfile.TemporaryDirectory(dir=store, prefix=".explanations-") as tmp:
        path = Path(tmp) / "rows.parquet"
        writer = None
        try:
            for block in blocks(store, k, top, exclude_seen=exclude_seen):
                batch = pa.RecordBatch.from_pydict(block, schema=writer.schema if writer
                                                   else None)
                writer = writer or pq.ParquetWriter(str(path), batch.schema)
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
        return write_table(store, "explanations", pads.dataset(str(path)),
                           "SELECT * FROM _new ORDER BY user_id, rank, kind, "
                           "contribution DESC")
