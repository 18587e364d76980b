"""The serving verbs as Python functions: the CLI and the HTTP server are thin layers over these.

Known users and items are answered from the fitted vectors with numpy (``Recommender``);
records of new users or items (``user_records=``, ``item_records=``) go through the trained
towers first (``unirec.serve.cold``, which imports torch), then are ranked the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import QueryError, require_extra
from unirec.serve.recommender import Recommender
from unirec.store.csr import csr_from_lists

StorePath = str | Path


def _is_many(users: Any) -> bool:
    return isinstance(users, (list, tuple, np.ndarray))


def _unknown_message(rec: Recommender, user: Any) -> str:
    return (f"user {user!r} is not in the store ({rec.n_users} users): pass their features "
            "with --user-json '{\"categorical\": {...}, \"history\": [item ids]}' (Python: "
            "user_records=[...]), or use --fallback popular")


def read_ids(path: str | Path, column: str, what: str, *, plain: bool = False) -> list[str]:
    """Ids from a CSV file's ``column``; with ``plain``, a file without that header is read
    as one id per line instead of being refused."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise QueryError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames and column in reader.fieldnames:
        ids = [row[column].strip() for row in reader if (row[column] or "").strip()]
    elif plain:
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        raise QueryError(f"{what} file {str(path)!r} has no {column} column "
                         f"(columns: {', '.join(reader.fieldnames or []) or 'none'})")
    if not ids:
        raise QueryError(f"{what} file {str(path)!r} lists no ids")
    return ids


def candidate_index(rec: Recommender, candidates: Sequence[Any] | str | Path | None
                    ) -> np.ndarray | None:
    """Item indices of a candidate list (ids, or a CSV path); None = the whole catalogue."""
    if candidates is None:
        return None
    if isinstance(candidates, (str, Path)):
        candidates = read_ids(candidates, "item_id", "candidates")
    return rec.item_index(list(candidates), what="candidate item")


def record_vectors(store: StorePath, rec: Recommender, side: str,
                   records: list[dict[str, Any]], tokens: bool = False) -> Any:
    """Vectors of new users/items given as input-format records (through the towers); with
    ``tokens``, (vectors, the user tower's tokens) for the ranking stage."""
    require_extra("train", f"a new {side} given as a record (the towers encode it)")
    from unirec.serve.cold import embed_record_tokens, embed_records  # torch: only here

    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise QueryError(f"{side} records must be JSON objects (a list of them for many)")
    return embed_record_tokens(store, records) if tokens else \
        embed_records(store, side, records)


def _ids(rec: Recommender, idx: np.ndarray) -> np.ndarray:
    return rec.item_ids(np.maximum(idx, 0))


def recommend(users: Any = None, k: int = 10, *, store: StorePath = "unirec-store",
              exclude_seen: bool = True, candidates: Sequence[Any] | str | Path | None = None,
              fallback: str | None = None, user_records: list[dict[str, Any]] | None = None,
              ann: bool = False, stage: str = "auto", candidates_n: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(item_ids, scores)`` for one user id, many (a list), or new user records.

    One id gives 1-D arrays (fewer than ``k`` when the catalogue runs out); a list of ids or
    ``user_records`` gives ``(n, k)`` arrays (``k`` clamped to the catalogue size), short
    rows padded with score NaN. ``k`` must be a positive int and ids ints or strings (else
    ``QueryError``). Seen items are
    excluded unless ``exclude_seen=False``; ``candidates`` (ids or a CSV path) restricts the
    catalogue; ``fallback="popular"`` answers unknown users with the most popular items;
    ``ann`` uses the approximate index (the ``ann`` extra) instead of the exact scan.
    ``stage``: 'auto' re-ranks the top ``candidates_n`` (default 200) with the ranking stage
    when fit kept one, 'rank' always does, 'retrieve' never (new users given as records too:
    the ranker reads their tower tokens, posted history included).
    """
    rec = Recommender.load(store)
    cand = candidate_index(rec, candidates)
    if user_records is not None:
        ranker = rec.stage_ranker(stage)
        vectors = record_vectors(store, rec, "user", user_records, ranker is not None)
        from unirec.serve.cold import record_history_index

        exclude = csr_from_lists(record_history_index(store, user_records)) if exclude_seen \
            else None
        if ranker is None:
            idx, scores = rec.rank(vectors, k, exclude, cand, ann=ann)
        else:  # the ranker reads the new users' tower tokens (their posted history too)
            vectors, tokens = vectors
            idx, scores = rec.rank_stages(None, vectors, k, exclude, cand, ann=ann,
                                          stage=stage, candidates_n=candidates_n,
                                          user_part=ranker.project_users(tokens))
        return _ids(rec, idx), scores
    if users is None:
        raise QueryError("give a user id, a list of user ids, or user_records")
    many = _is_many(users)
    ids = list(users) if many else [users]
    index = rec.user_index(ids)
    if fallback is None and (index < 0).any():
        raise QueryError(_unknown_message(rec, ids[int(np.argmax(index < 0))]))
    idx, scores = rec.recommend_index(index, k, exclude_seen=exclude_seen, candidates=cand,
                                      fallback=fallback, ann=ann, stage=stage,
                                      candidates_n=candidates_n)
    if many:
        return _ids(rec, idx), scores
    keep = idx[0] > 0
    return _ids(rec, idx[0][keep]), scores[0][keep]


def similar(item: Any = None, k: int = 10, *, store: StorePath = "unirec-store",
            candidates: Sequence[Any] | str | Path | None = None,
            item_record: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items nearest to one item (by id, or a new item's record), itself excluded."""
    rec = Recommender.load(store)
    cand = candidate_index(rec, candidates)
    if item_record is not None:
        vector = record_vectors(store, rec, "item", [item_record])
        idx, scores = rec.rank(vector, k, None, cand)
    else:
        index = rec.item_index([item])
        idx, scores = rec.rank(rec.items[index], k, None, cand, skip_self=index)
    keep = idx[0] > 0
    return _ids(rec, idx[0][keep]), scores[0][keep]


def score(user: Any, items: Sequence[Any], *, store: StorePath = "unirec-store",
          user_record: dict[str, Any] | None = None) -> np.ndarray:
    """Cosine scores of ``items`` for one user (by id, or a new user's record)."""
    rec = Recommender.load(store)
    if not _is_many(items):
        raise QueryError(f"items must be a list of item ids, got {type(items).__name__} "
                         f"{items!r}")
    index = rec.item_index(list(items))
    if user_record is not None:
        vector = record_vectors(store, rec, "user", [user_record])[0]
    else:
        u = rec.user_index([user])
        if u[0] < 0:
            raise QueryError(_unknown_message(rec, user))
        vector = rec.users[u[0]]
    return (rec.items[index] @ vector).astype(np.float32)


def embeddings(side: str, *, store: StorePath = "unirec-store") -> tuple[np.ndarray, np.ndarray]:
    """Every user's (or item's) ``(ids, vectors)``, the padding row left out."""
    if side not in ("users", "items"):
        raise QueryError(f"embed users or items, not {side!r}")
    rec = Recommender.load(store)
    if side == "users":
        return rec.user_ids(np.arange(1, rec.n_users + 1)), np.asarray(rec.users[1:])
    return rec.item_ids(np.arange(1, rec.n_items + 1)), np.asarray(rec.items[1:])


def all_users(k: int = 10, *, store: StorePath = "unirec-store", exclude_seen: bool = True,
              candidates: Sequence[Any] | str | Path | None = None, chunk: int = 4096,
              stage: str = "auto", candidates_n: int | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(user_ids, item_index, item_ids, scores)`` blocks of ``chunk`` users: every
    user's top-K without holding the whole (users x k) answer in memory at once.

    ``item_index`` is the ``(n, k)`` item index matrix (0 where a row ran short) that
    ``item_ids`` names; a writer that only wants ids ignores it. ``stage`` and
    ``candidates_n`` as for ``recommend``."""
    rec = Recommender.load(store)
    cand = candidate_index(rec, candidates)
    for lo in range(1, rec.n_users + 1, chunk):
        users = np.arange(lo, min(lo + chunk, rec.n_users + 1))
        idx, scores = rec.recommend_index(users, k, exclude_seen=exclude_seen, candidates=cand,
                                          stage=stage, candidates_n=candidates_n)
        yield rec.user_ids(users), idx, _ids(rec, idx), scores
