"""Answering queries from a fitted model: top-K for known users, similar items, scores.

numpy only, on purpose: the vectors were computed by ``fit`` (users with their latest
history), so a known user's top-K is one matrix-vector product over memory-mapped item
vectors and an exact partial sort. No torch, polars or DuckDB import on this path (a test
checks ``sys.modules``), which is what lets ``unirec recommend`` answer in a fraction of a
second. New users or items given as feature records go through the towers instead
(``unirec.serve.cold``), then come back here as vectors.

Scores are cosine similarities (both towers emit unit vectors). Ties break by the lower
item index, i.e. the item's position in the input, so answers are reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import NotFittedError, QueryError, StoreError
from unirec.metrics import topk
from unirec.model.folder import BUNDLE_META, check_fresh
from unirec.store.csr import Csr, csr_rows

FALLBACKS = ("popular",)
_CACHE: dict[tuple[str, int, int], Recommender] = {}
# Batch mode scores up to 1,024 users at once, fewer for big catalogues: a block's
# (users, n_items) float32 scores (and top-K's working copy) stay near 128 MB each.
_BLOCK_USERS, _BLOCK_ELEMENTS = 1024, 1 << 25


def file_key(path: Path) -> tuple[str, int, int]:
    """Which file ``path`` is now: a swapped-in model folder has new inodes."""
    st = path.stat()
    return str(path.absolute()), st.st_ino, st.st_mtime_ns


def _check_shapes(arrays: dict[str, np.ndarray]) -> None:
    """A damaged bundle (a truncated .npy fails in np.load) or a partial one fails here."""
    need = ("user_embeddings", "item_embeddings", "user_ids", "item_ids", "user_sorted_ids",
            "item_sorted_ids", "user_sorted_index", "item_sorted_index", "seen_indptr",
            "seen_indices", "popularity")
    missing = [n for n in need if n not in arrays]
    if missing:
        raise ValueError(f"missing {missing[0]}.npy")
    for side in ("user", "item"):
        if len(arrays[f"{side}_embeddings"]) != len(arrays[f"{side}_ids"]):
            raise ValueError(f"{side}_embeddings.npy does not match {side}_ids.npy")


def check_k(k: Any, n_items: int) -> int:
    """``k`` as a positive int, clamped to the catalogue: a huge k allocates nothing huge."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    return int(min(k, max(n_items, 1)))


def _disallowed(n: int, candidates: np.ndarray) -> np.ndarray:
    """Boolean mask over ``n`` item rows: True where an item is not a candidate."""
    out = np.ones(n, bool)
    out[candidates] = False
    return out


class Recommender:
    """A fitted model's vectors, ids and seen sets, loaded once per process."""

    def __init__(self, model_dir: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]):
        self.model_dir = model_dir
        self.meta = meta
        self.users: np.ndarray = arrays["user_embeddings"]
        self.items: np.ndarray = arrays["item_embeddings"]
        self._a = arrays
        self._ann = None  # the approximate index, loaded on first --ann query
        self._ranker: Any = False  # the ranking stage, loaded on first use (None: none)

    # ---- loading -------------------------------------------------------------------
    @classmethod
    def load(cls, store: str | Path = "unirec-store") -> Recommender:
        """The model in ``store/model``; cached per process until ``fit`` rewrites it."""
        model_dir = Path(store) / "model"
        meta_path = model_dir / BUNDLE_META
        if not meta_path.is_file():
            if not (Path(store) / "manifest.json").is_file():
                raise StoreError(f"no feature store at {str(store)!r}: run `unirec featurize "
                                 f"DATA --store {store}` first")
            raise NotFittedError(f"no fitted model in {str(store)!r}: run `unirec fit --store "
                                 f"{store}` first")
        for _ in range(5):  # a fit may swap a new model folder in while we read this one
            try:
                key = file_key(meta_path)
                if key in _CACHE:
                    return _CACHE[key]
                rec = cls._read(Path(store), model_dir, meta_path)
                same = file_key(meta_path) == key
            except (OSError, ValueError, EOFError, KeyError):
                continue
            if same:  # the folder read is still the model
                for old in [k for k in _CACHE if k[0] == key[0]]:
                    del _CACHE[old]  # a replaced model: its maps go when its users drop it
                _CACHE[key] = rec
                return rec
        raise StoreError(f"the model in {str(model_dir)!r} is damaged or keeps changing: run "
                         f"`unirec fit --store {store}` again")

    @classmethod
    def _read(cls, store: Path, model_dir: Path, meta_path: Path) -> Recommender:
        meta = json.loads(meta_path.read_text())
        manifest = json.loads((store / "manifest.json").read_text())
        check_fresh(meta, manifest, model_dir, store)
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in model_dir.glob("*.npy")}
        _check_shapes(arrays)
        return cls(model_dir, arrays, meta)

    # ---- ids -----------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users) - 1

    @property
    def n_items(self) -> int:
        return len(self.items) - 1

    def _index(self, side: str, ids: Sequence[Any]) -> np.ndarray:
        """Indices of ``ids`` (strings from a command line are fine); -1 where unknown."""
        sorted_ids = self._a[f"{side}_sorted_ids"]
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu" and sorted_ids.dtype.kind == "i":
            keys = ids.astype(np.int64)  # indices' ids handed back: already typed
        elif sorted_ids.dtype.kind == "i":
            keys = np.array([_as_int(v, side) for v in ids], dtype=np.int64)
        else:
            keys = np.asarray([_as_str(v, side) for v in ids],
                              dtype=sorted_ids.dtype if len(ids) else str)
        if len(sorted_ids) == 0:
            return np.full(len(keys), -1, np.int64)
        pos = np.searchsorted(sorted_ids, keys).clip(max=len(sorted_ids) - 1)
        found = sorted_ids[pos] == keys
        return np.where(found, self._a[f"{side}_sorted_index"][pos], -1)

    def user_index(self, ids: Sequence[Any]) -> np.ndarray:
        return self._index("user", ids)

    def item_index(self, ids: Sequence[Any], *, what: str = "item") -> np.ndarray:
        """Indices of known items; a ``QueryError`` naming the first unknown one."""
        idx = self._index("item", ids)
        missing = np.flatnonzero(idx < 0)
        if len(missing):
            raise QueryError(f"{what} {ids[missing[0]]!r} is not in the catalogue "
                             f"({len(missing)} unknown of {len(ids)}; {self.n_items} items)")
        return idx

    def item_ids(self, idx: np.ndarray) -> np.ndarray:
        return self._a["item_ids"][idx]

    def user_ids(self, idx: np.ndarray) -> np.ndarray:
        return self._a["user_ids"][idx]

    def titles(self, idx: np.ndarray) -> list[str] | None:
        """The readable item field (``bundle.json``'s ``title_field``) of item indices."""
        if "item_titles" not in self._a:
            return None
        data, off = self._a["item_titles"], self._a["item_title_offsets"]
        return [bytes(data[off[i]:off[i + 1]]).decode() if i > 0 else "" for i in idx]

    @property
    def title_field(self) -> str | None:
        return self.meta.get("title_field")

    # ---- ranking -------------------------------------------------------------------
    @property
    def ranker(self) -> Any:
        """The ranking stage (``unirec.model.ranker.Ranker``) fit left, or None."""
        if self._ranker is False:
            from unirec.model.ranker import Ranker

            self._ranker = Ranker.load(self.model_dir)
        return self._ranker

    def stage_ranker(self, stage: str) -> Any:
        """The ranker a query at ``stage`` uses: 'auto' -- the ranker when fit kept it,
        'rank' -- the ranker even when auto dropped it, 'retrieve' -- none."""
        from unirec.model.ranker import STAGES

        if stage not in STAGES:
            raise QueryError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        if stage == "retrieve":
            return None
        ranker = self.ranker
        if stage == "rank" and ranker is None:
            raise QueryError("this model has no ranking stage: fit with "
                             "train.rank.enabled=true (or auto)")
        return ranker if stage == "rank" or (ranker is not None and ranker.active) else None

    def rank_stages(self, users: np.ndarray, vectors: np.ndarray, k: int,
                    exclude: Csr | None = None, candidates: np.ndarray | None = None,
                    ann: bool = False, stage: str = "auto", candidates_n: int | None = None,
                    user_part: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``rank`` for known user indices, then (per ``stage``) the ranker over the top
        ``candidates_n`` (default: the model's ``serve_candidates``). New users (records)
        pass ``users`` None and their ``user_part`` (``Ranker.project_users``)."""
        ranker = self.stage_ranker(stage)
        if ranker is None:
            return self.rank(vectors, k, exclude, candidates, ann=ann)
        from unirec.model.ranker import rerank

        n = candidates_n or ranker.meta["config"]["serve_candidates"]
        if n < 1:
            raise QueryError(f"candidates_n must be at least 1, got {n}")
        idx, scores = self.rank(vectors, max(k, n), exclude, candidates, ann=ann)
        return rerank(ranker, users, idx, scores, vectors, self.items, check_k(k, self.n_items),
                      user_part=user_part, forced=stage == "rank")

    def seen(self, users: np.ndarray) -> Csr:
        """CSR of the items each of ``users`` (indices, -1 = none) interacted with."""
        return csr_rows((self._a["seen_indptr"], self._a["seen_indices"]), users)

    def rank(self, vectors: np.ndarray, k: int, exclude: Csr | None = None,
             candidates: np.ndarray | None = None, skip_self: np.ndarray | None = None,
             ann: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` item indices and scores for query ``vectors`` (n, dim).

        ``candidates`` (item indices) restricts the catalogue; ``exclude`` (CSR over the rows)
        removes items per row. ``k`` is clamped to the catalogue size (a huge k allocates
        nothing huge); rows with fewer allowed items are padded with index -1 and score NaN.
        ``ann`` searches the approximate index (``unirec.serve.ann``) instead.
        """
        k = check_k(k, self.n_items)
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        n = len(vectors)
        if ann:
            return self._rank_ann(vectors, k, exclude, candidates)
        idx = np.full((n, k), -1, np.int64)
        out = np.full((n, k), np.nan, np.float32)
        block = max(1, min(_BLOCK_USERS, _BLOCK_ELEMENTS // len(self.items)))
        banned = None if candidates is None else _disallowed(len(self.items), candidates)
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            # (b, n_items + 1), column 0 = padding; one query is a matrix-vector product,
            # which BLAS streams at memory bandwidth (the transposed GEMM does not)
            scores = (self.items @ vectors[lo])[None, :] if hi - lo == 1 else \
                vectors[lo:hi] @ self.items.T
            scores[:, 0] = -np.inf
            if banned is not None:
                scores[:, banned] = -np.inf
            if skip_self is not None:
                scores[np.arange(hi - lo), skip_self[lo:hi]] = -np.inf
            block_ex = None
            if exclude is not None:
                ptr, ind = exclude
                block_ex = (ptr[lo:hi + 1] - ptr[lo], ind[ptr[lo]:ptr[hi]])
            got = _top_row(scores[0], k, block_ex) if hi - lo == 1 else \
                topk(scores, k, block_ex)
            idx[lo:hi] = got
            out[lo:hi] = np.where(got > 0, np.take_along_axis(scores, np.maximum(got, 0), 1),
                                  np.nan)
        return idx, out

    def _rank_ann(self, vectors: np.ndarray, k: int, exclude: Csr | None,
                  candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from unirec.serve import ann

        if self._ann is None:
            self._ann = ann.load_or_build(np.asarray(self.items), self.model_dir)
        idx = ann.search(self._ann, vectors, k, exclude, candidates, self.n_items)
        scores = np.einsum("nd,nkd->nk", vectors, self.items[np.maximum(idx, 0)])
        return idx, np.where(idx > 0, scores, np.nan).astype(np.float32)

    def popular(self, n: int, k: int, exclude: Csr | None = None,
                candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Most-trained-on items (ties by index) for ``n`` users: the cold-start fallback."""
        k = check_k(k, self.n_items)
        pop = np.asarray(self._a["popularity"], np.float64).copy()
        pop[0] = -np.inf
        if candidates is not None:
            pop[_disallowed(len(pop), candidates)] = -np.inf
        scores = np.broadcast_to(pop, (n, len(pop)))
        idx = topk(scores, k, exclude)
        return idx, np.where(idx > 0, pop[np.maximum(idx, 0)], np.nan).astype(np.float32)

    def recommend_index(self, users: np.ndarray, k: int = 10, *, exclude_seen: bool = True,
                        candidates: np.ndarray | None = None, fallback: str | None = None,
                        ann: bool = False, stage: str = "auto",
                        candidates_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (item indices, scores) for user indices; -1 = unknown (needs
        ``fallback``). ``stage``/``candidates_n``: see ``rank_stages``."""
        users = np.asarray(users, np.int64)
        k = check_k(k, self.n_items)
        if fallback is not None and fallback not in FALLBACKS:
            raise QueryError(f"unknown fallback {fallback!r}; choose from {', '.join(FALLBACKS)}")
        exclude = self.seen(users) if exclude_seen else None
        known = users > 0
        if not known.all() and fallback is None:
            raise QueryError("unknown users need a fallback")
        idx = np.full((len(users), k), -1, np.int64)
        scores = np.full((len(users), k), np.nan, np.float32)
        rows = np.flatnonzero(known)
        if len(rows):
            ex = csr_rows(exclude, rows) if exclude is not None else None
            idx[rows], scores[rows] = self.rank_stages(
                users[rows], self.users[users[rows]], k, ex, candidates, ann, stage,
                candidates_n)
        cold = np.flatnonzero(~known)
        if len(cold):
            idx[cold], scores[cold] = self.popular(len(cold), k, None, candidates)
        return idx, scores


def _top_row(scores: np.ndarray, k: int, exclude: Csr | None) -> np.ndarray:
    """``metrics.topk`` for one row, a few times faster: a partition finds the k-th score,
    only the items at or above it are sorted (by score, then index, so ties still go to the
    lower index). ``scores`` is scratch: excluded items are set to -inf in place."""
    if exclude is not None:
        scores[exclude[1]] = -np.inf
    n = len(scores)
    kk = min(k, n)
    kth = np.partition(scores, n - kk)[n - kk]
    cand = np.flatnonzero(scores >= kth) if kth > -np.inf else np.flatnonzero(scores > kth)
    top = cand[np.lexsort((cand, -scores[cand]))[:kk]]
    out = np.full((1, k), -1, np.int64)
    out[0, :len(top)] = top
    return out


_UNKNOWN_INT = np.iinfo(np.int64).min  # an id no int64 catalogue holds: reported unknown
_UNKNOWN_STR = "\0"  # likewise for string catalogues (ids never hold NUL)


def check_id(value: Any, side: str) -> None:
    """Ids are ints or strings (numpy's too); anything else -- a float, a bool, bytes,
    None -- is a ``QueryError``, never silently turned into some other id."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, str, np.integer)):
        raise QueryError(f"{side} id {value!r} is a {type(value).__name__}: ids are integers "
                         "or strings")


def _as_int(value: Any, side: str) -> int:
    """An id of an integer catalogue: an int, or its decimal text (command lines and URLs
    carry text); a string catalogue's kind of id, or one out of int64 range, is unknown."""
    check_id(value, side)
    if isinstance(value, str):
        text = value[1:] if value[:1] == "-" else value
        if not (text.isascii() and text.isdigit()):
            return _UNKNOWN_INT
        value = int(value)
    value = int(value)
    return value if -(1 << 63) < value < (1 << 63) else _UNKNOWN_INT


def _as_str(value: Any, side: str) -> str:
    """An id of a string catalogue: only a string matches (1 is not "1")."""
    check_id(value, side)
    return str(value) if isinstance(value, str) else _UNKNOWN_STR
