"""Exact top-K and ranking metrics, shared by ``fit``'s validation and ``unirec evaluate``.

numpy only: the serving path (known users answered from precomputed embeddings) must never
import torch. The metric definitions follow ``../shared/protocol/evaluate.py`` rule for rule
(capped recall, recommended train items are violations and never hits, duplicates are
skipped but keep their rank position), so our numbers agree with the protocol's evaluator.

Interaction sets are CSR-like ``(indptr, indices)`` pairs over user rows: user ``u``'s items
are ``indices[indptr[u]:indptr[u + 1]]``. Membership tests use sorted ``user * n + item``
keys, so nothing loops over users in Python.
"""

from __future__ import annotations

import numpy as np

from unirec.store.csr import Csr, csr_rows, rows_of

# Rows of the score matrix handled at once by topk, sized so the temporaries stay small.
_TOPK_BLOCK_ELEMENTS = 1 << 22


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean ``keys in sorted_keys`` by binary search (``sorted_keys`` ascending)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def topk(scores: np.ndarray, k: int, exclude: Csr | np.ndarray | None = None) -> np.ndarray:
    """Exact top-``k`` items per user, best first, ties broken by the lower item index.

    Deterministic on purpose: the same scores always give the same lists, whatever the
    platform, so evaluations are reproducible. ``exclude`` (CSR sets or a boolean mask of
    ``scores``' shape, e.g. the user's train items) is never returned; neither is an item
    scored ``-inf`` or NaN. Rows with fewer than ``k`` allowed items are padded with -1.

    Returns an int64 array of shape ``(n_users, k)``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_users, n_items), got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_users, n_items = scores.shape
    out = np.full((n_users, k), -1, dtype=np.int64)
    kk = min(k, n_items)
    if n_users == 0 or kk == 0:
        return out
    if isinstance(exclude, np.ndarray) and exclude.shape != scores.shape:
        raise ValueError(f"exclude mask shape {exclude.shape} != scores shape {scores.shape}")
    if isinstance(exclude, tuple) and len(exclude[0]) != n_users + 1:
        raise ValueError(f"exclude indptr must have n_users + 1 = {n_users + 1} entries")
    block = max(1, _TOPK_BLOCK_ELEMENTS // n_items)
    for lo in range(0, n_users, block):
        hi = min(lo + block, n_users)
        work = scores[lo:hi].astype(np.result_type(scores.dtype, np.float32), copy=True)
        work[np.isnan(work)] = -np.inf
        if isinstance(exclude, np.ndarray):
            work[exclude[lo:hi]] = -np.inf
        elif exclude is not None:
            indptr, indices = csr_rows(exclude, np.arange(lo, hi))
            work[rows_of(indptr), indices] = -np.inf
        # The kk-th largest score per row: only items at or above it can be in the top-k.
        # Sorting just those by (row, -score, item) keeps ties on the lower item index.
        kth = np.partition(work, n_items - kk, axis=1)[:, n_items - kk : n_items - kk + 1]
        rows, cols = np.nonzero((work >= kth) & (work > -np.inf))
        vals = work[rows, cols]
        order = np.lexsort((cols, -vals, rows))
        rows, cols = rows[order], cols[order]
        place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # rank within its row
        keep = place < kk
        out[lo + rows[keep], place[keep]] = cols[keep]
    return out


def ranking_metrics(
    recs: np.ndarray,
    truth_indptr: np.ndarray,
    truth_indices: np.ndarray,
    k: int,
    n_items: int | None = None,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> dict[str, float]:
    """Recall/NDCG/HR/Precision/MAP@K and coverage of top-K lists, as the protocol scores them.

    ``recs`` is ``(n_users, >=0)`` int item indices, rank order, -1 for "no item" (padding);
    only its first ``k`` columns count. ``truth`` and ``exclude`` (the train items) are CSR
    sets over the same users. Users with no truth item are skipped (as if absent from the
    test file); a recommended excluded item, or one outside ``candidates`` when given, is a
    violation and never a hit; a repeated item is a duplicate, skipped but keeping its rank.
    Coverage is distinct recommended items over ``len(candidates)``, else ``n_items``, else
    the distinct items of truth and exclude (the protocol's defaults).

    Returns a dict with the protocol's keys (``recall@10``, ``ndcg@10``, ``hr@10``,
    ``precision@10``, ``map@10``, ``coverage``, ``n_users_evaluated``, ``train_violations``,
    ...) plus the short aliases ``n_users`` and ``violations``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    recs = np.asarray(recs, dtype=np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recs must be 2-D (n_users, K), got shape {recs.shape}")
    n_users = recs.shape[0]
    truth_indptr = np.asarray(truth_indptr, dtype=np.int64)
    truth_indices = np.asarray(truth_indices, dtype=np.int64)
    if len(truth_indptr) != n_users + 1:
        raise ValueError(f"truth_indptr must have n_users + 1 = {n_users + 1} entries")
    if (exclude_indptr is None) != (exclude_indices is None):
        raise ValueError("give both exclude_indptr and exclude_indices, or neither")
    if exclude_indptr is None:
        exclude_indptr = np.zeros(n_users + 1, dtype=np.int64)
        exclude_indices = np.zeros(0, dtype=np.int64)
    exclude_indptr = np.asarray(exclude_indptr, dtype=np.int64)
    exclude_indices = np.asarray(exclude_indices, dtype=np.int64)
    if len(exclude_indptr) != n_users + 1:
        raise ValueError(f"exclude_indptr must have n_users + 1 = {n_users + 1} entries")
    cands = None if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))

    lists = recs[:, :k]
    valid = lists >= 0
    width = 1 + max(
        [int(a.max()) for a in (lists, truth_indices, exclude_indices) if a.size]
        + [int(cands.max()) if cands is not None and cands.size else 0, n_items or 0]
    )
    rows = np.arange(n_users, dtype=np.int64)[:, None]
    keys = rows * width + lists  # -1 padding maps to a key no set holds

    # First occurrence of each item within its row (row-major order: lowest rank first).
    first = np.zeros(lists.size, dtype=bool)
    flat = np.where(valid, keys, -1).ravel()
    first[np.unique(flat, return_index=True)[1]] = True
    first = first.reshape(lists.shape) & valid

    excluded = valid & _member(keys, np.sort(rows_of(exclude_indptr) * width + exclude_indices))
    bad = excluded if cands is None else excluded | (valid & ~np.isin(lists, cands))
    truth_keys = np.sort(rows_of(truth_indptr) * width + truth_indices)
    hit = first & ~bad & _member(keys, truth_keys)

    n_truth = np.bincount(np.unique(truth_keys) // width, minlength=n_users)
    ev = n_truth > 0  # the users the protocol evaluates
    has_list = valid.any(axis=1)

    pos = np.arange(1, lists.shape[1] + 1, dtype=np.float64)
    hits = hit.sum(axis=1)
    dcg = (hit / np.log2(pos + 1)).sum(axis=1)
    ap = (hit * np.cumsum(hit, axis=1) / pos).sum(axis=1)
    denom = np.minimum(k, n_truth)
    idcg = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))]
    n_eval = int(ev.sum())
    n = max(n_eval, 1)
    safe = np.maximum(denom, 1)

    viol_eval = (first & bad).sum(axis=1)
    viol_other = excluded.sum(axis=1)  # the protocol counts duplicates here, candidates not
    viol = np.where(ev, viol_eval, viol_other)

    if cands is not None:
        cov_denom = int(cands.size)
    elif n_items is not None:
        cov_denom = int(n_items)
    else:
        cov_denom = int(np.union1d(truth_indices, exclude_indices).size)
    n_recommended = int(np.unique(lists[valid]).size)
    violations = int(viol.sum())
    return {
        "k": k,
        f"recall@{k}": float((hits / safe)[ev].sum() / n),
        f"ndcg@{k}": float((dcg / idcg[safe])[ev].sum() / n),
        f"hr@{k}": float((hits > 0)[ev].sum() / n),
        f"precision@{k}": float((hits / k)[ev].sum() / n),
        f"map@{k}": float((ap / safe)[ev].sum() / n),
        "coverage": n_recommended / cov_denom if cov_denom else 0.0,
        "coverage_denominator": cov_denom,
        "n_users_evaluated": n_eval,
        "n_users_without_recs": int((ev & ~has_list).sum()),
        "train_violations": violations,
        "users_with_violations": int((viol > 0).sum()),
        "duplicate_recs": int((ev[:, None] & valid & ~first).sum()),
        "n_users": n_eval,
        "violations": violations,
    }


def ndcg_per_user(recs: np.ndarray, truth_indptr: np.ndarray, truth_indices: np.ndarray,
                  k: int) -> np.ndarray:
    """Each evaluated user's NDCG@K of duplicate-free top-K lists (-1 pads), in the order of
    the users with any truth item: what a paired comparison of two rankings of the same users
    needs (``ranking_metrics``' ``ndcg@K`` is its mean when nothing is excluded)."""
    lists = np.asarray(recs, np.int64)[:, :k]
    indptr = np.asarray(truth_indptr, np.int64)
    indices = np.asarray(truth_indices, np.int64)
    width = 1 + max(int(lists.max(initial=0)), int(indices.max(initial=0)))
    rows = np.arange(len(lists), dtype=np.int64)[:, None]
    truth = np.unique(rows_of(indptr) * width + indices)
    hit = (lists >= 0) & _member(rows * width + lists, truth)
    n_truth = np.bincount(truth // width, minlength=len(lists))
    discount = 1.0 / np.log2(np.arange(2, lists.shape[1] + 2, dtype=np.float64))
    idcg = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))]
    ev = n_truth > 0
    return ((hit * discount).sum(1) / idcg[np.minimum(k, np.maximum(n_truth, 1))])[ev]
