"""An approximate nearest-neighbour index over the item vectors (the ``ann`` extra: usearch).

Why: exact top-K streams the whole item matrix per query, which is memory-bandwidth bound:
about 20 ms per user at 1M items on one core. An HNSW graph visits a few thousand vectors
instead. The price is recall (the bench reports it against exact) and a one-off build, so it
is opt-in (``unirec recommend --ann``); the index is built on first use and saved beside the
model as ``items.usearch``, rebuilt when the item vectors change.

Seen items are filtered after the search, so the search asks for ``k`` plus the number of
items to exclude (and a margin), then keeps the best ``k`` that remain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unirec.errors import MissingExtraError
from unirec.store.atomic import write_file

INDEX_FILE = "items.usearch"
_MARGIN = 16


def _usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise MissingExtraError("--ann needs the ann extra: pip install 'unirec[ann]'") from None
    return Index


def load_or_build(items: np.ndarray, model_dir: Path | None, connectivity: int = 16,
                  expansion_add: int = 128, expansion_search: int = 64):
    """The usearch index over item rows 1..n (keys = item indices), cached in ``model_dir``."""
    index_cls = _usearch()
    path = model_dir / INDEX_FILE if model_dir is not None else None
    emb = model_dir / "item_embeddings.npy" if model_dir is not None else None
    if path is not None and path.is_file() and path.stat().st_mtime >= emb.stat().st_mtime:
        return index_cls.restore(str(path), view=True)
    index = index_cls(ndim=items.shape[1], metric="ip", dtype="f32", connectivity=connectivity,
                      expansion_add=expansion_add, expansion_search=expansion_search)
    index.add(np.arange(1, len(items), dtype=np.uint64), np.ascontiguousarray(items[1:]))
    if path is not None:
        try:
            write_file(path, lambda tmp: index.save(str(tmp)))
        except OSError:  # a read-only model folder: serve from memory, rebuild next process
            pass
    return index


def search(index, vectors: np.ndarray, k: int, exclude: tuple[np.ndarray, np.ndarray] | None,
           candidates: np.ndarray | None, n_items: int) -> np.ndarray:
    """Approximate top-``k`` item indices per row (-1 padded), excluded items removed."""
    n = len(vectors)
    extra = 0 if exclude is None else int(np.diff(exclude[0]).max(initial=0))
    count = min(n_items, k + extra + _MARGIN)
    if candidates is not None:  # a restricted catalogue can be far from the query: look wider
        count = min(n_items, max(count, 4 * (k + extra) * n_items // max(len(candidates), 1)))
    found = index.search(np.ascontiguousarray(vectors, np.float32), count)
    keys = np.asarray(found.keys, np.int64).reshape(n, -1)
    dist = np.asarray(found.distances, np.float64).reshape(n, -1)
    keys = np.where(np.isfinite(dist) & (keys > 0) & (keys <= n_items), keys, -1)
    bad = keys < 0
    if exclude is not None:
        ptr, ind = exclude
        rows = np.repeat(np.arange(n), np.diff(ptr))
        width = n_items + 1
        banned = np.sort(rows * width + ind)
        flat = np.arange(n)[:, None] * width + np.maximum(keys, 0)
        pos = np.searchsorted(banned, flat).clip(max=max(len(banned) - 1, 0))
        bad |= (banned[pos] == flat) if len(banned) else False
    if candidates is not None:
        bad |= ~np.isin(keys, candidates)
    out = np.full((n, k), -1, np.int64)
    order = np.argsort(bad, axis=1, kind="stable")  # good ones first, search order kept
    keys = np.take_along_axis(np.where(bad, -1, keys), order, axis=1)[:, :k]
    out[:, :keys.shape[1]] = keys
    return out
