"""Per-row lists of ints (a user's items, a user's history) as CSR pairs, numpy only.

``(indptr, indices)``: row ``r`` holds ``indices[indptr[r]:indptr[r + 1]]``. Every stage that
groups, slices or left-pads such lists uses these functions, so nothing loops over rows in
Python and the serving path (no torch, no DuckDB) can use them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Csr = tuple[np.ndarray, np.ndarray]


def csr_from_pairs(users: np.ndarray, items: np.ndarray, n_users: int) -> Csr:
    """Group ``(user, item)`` pairs by user: the CSR sets the metrics and top-K expect.

    Returns ``(indptr, indices)`` with items sorted and deduplicated within each user, so
    repeated interactions never count twice.
    """
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    if users.shape != items.shape:
        raise ValueError(f"users and items differ in length: {users.size} vs {items.size}")
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"user indices must lie in [0, {n_users})")
    if items.size and items.min() < 0:
        raise ValueError("item indices must be non-negative")
    width = int(items.max()) + 1 if items.size else 1
    keys = np.unique(users * width + items)
    rows = keys // width
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return indptr, keys % width


def csr_from_lists(lists: Sequence[np.ndarray]) -> Csr:
    """One row per list, in order, values kept as they are (order and repeats)."""
    indptr = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=indptr[1:])
    indices = (np.concatenate(lists).astype(np.int64) if len(lists)
               else np.zeros(0, np.int64))
    return indptr, indices


def rows_of(indptr: np.ndarray) -> np.ndarray:
    """The row of every entry of a CSR (``indptr`` expanded)."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def csr_rows(csr: Csr, rows: np.ndarray) -> Csr:
    """The CSR of ``rows`` of ``csr``, in that order; a negative row is an empty one."""
    indptr, indices = csr
    rows = np.asarray(rows, np.int64)
    known = rows >= 0
    at = np.maximum(rows, 0)
    lo = np.where(known, indptr[at], 0)
    lengths = np.where(known, indptr[at + 1], 0) - lo
    out = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    take = np.repeat(lo - out[:-1], lengths) + np.arange(out[-1])
    return out, np.asarray(indices[take], np.int64)


def pad_left(csr: Csr, length: int) -> np.ndarray:
    """``(rows, length)`` int64: each row's last ``length`` values, right-aligned, 0 before
    them (a history: most recent last)."""
    indptr, indices = csr
    indptr = np.asarray(indptr, np.int64)
    n = len(indptr) - 1
    out = np.zeros((n, length), np.int64)
    lo = np.maximum(indptr[:-1], indptr[1:] - length)
    kept = indptr[1:] - lo
    rows = np.repeat(np.arange(n), kept)
    start = np.repeat(lo, kept)
    offset = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    out[rows, length - np.repeat(kept, kept) + offset] = np.asarray(indices)[start + offset]
    return out
