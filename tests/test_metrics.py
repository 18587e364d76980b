"""unirec.metrics: hand-computed cases, agreement with the shared protocol, exact top-K."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unirec import metrics
from unirec.metrics import ranking_metrics, topk
from unirec.store.csr import csr_from_pairs

PROTOCOL = Path(__file__).resolve().parents[2] / "shared" / "protocol" / "evaluate.py"


def _protocol_evaluate():
    """The shared evaluator's ``evaluate``, or a skip saying where it was looked for."""
    if not PROTOCOL.is_file():
        pytest.skip(f"protocol evaluator not found at {PROTOCOL} (../shared/protocol)")
    spec = importlib.util.spec_from_file_location("protocol_evaluate", PROTOCOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate


def _csr(sets: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    users = [u for u, s in enumerate(sets) for _ in s]
    items = [i for s in sets for i in sorted(s)]
    return csr_from_pairs(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
                          len(sets))


def _as_dicts(truth, train, recs):
    """Our arrays as the protocol's user -> set / user -> list dicts (empty ones absent)."""
    test_d = {u: s for u, s in enumerate(truth) if s}
    train_d = {u: s for u, s in enumerate(train) if s}
    recs_d = {u: [int(i) for i in row if i >= 0] for u, row in enumerate(recs)}
    return test_d, train_d, {u: lst for u, lst in recs_d.items() if lst}


# A checkerboard: even users like even items, odd users odd items.
TRUTH = [{0, 2, 4}, {1, 3, 5}, {0, 2, 4}, set()]
TRAIN = [{1}, set(), {5}, {3}]
RECS = np.array([[0, 1, 2], [0, 2, 4], [4, 4, -1], [5, 3, 1]])


def test_checkerboard_by_hand():
    t, x = _csr(TRUTH), _csr(TRAIN)
    got = ranking_metrics(RECS, *t, k=3, n_items=8, exclude_indptr=x[0], exclude_indices=x[1])
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    # user 0: hits at ranks 1 and 3, rank 2 a train item; user 1: no hit;
    # user 2: hit at rank 1, rank 2 a duplicate; user 3 has no truth (not evaluated).
    assert got["n_users"] == got["n_users_evaluated"] == 3
    assert got["recall@3"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
    assert got["precision@3"] == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)
    assert got["hr@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx((1.5 / idcg + 1 / idcg) / 3)
    assert got["map@3"] == pytest.approx(((1 + 2 / 3) / 3 + 1 / 3) / 3)
    assert got["coverage"] == pytest.approx(6 / 8)
    assert got["violations"] == got["train_violations"] == 2  # user 0's item 1, user 3's 3
    assert got["users_with_violations"] == 2
    assert got["duplicate_recs"] == 1
    assert got["n_users_without_recs"] == 0


def test_checkerboard_matches_protocol():
    evaluate = _protocol_evaluate()
    t, x = _csr(TRUTH), _csr(TRAIN)
    ours = ranking_metrics(RECS, *t, k=3, n_items=8, exclude_indptr=x[0], exclude_indices=x[1])
    ref = evaluate(*_as_dicts(TRUTH, TRAIN, RECS), k=3, n_items=8)
    for key, value in ref.items():
        if key != "recall_definition":
            assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_and_empty_lists():
    t = _csr([{3}, {1, 2}])
    perfect = ranking_metrics(np.array([[3, 0], [2, 1]]), *t, k=2, n_items=4)
    for name in ("recall@2", "ndcg@2", "hr@2", "map@2"):
        assert perfect[name] == pytest.approx(1.0)
    assert perfect["precision@2"] == pytest.approx((0.5 + 1.0) / 2)
    empty = ranking_metrics(np.full((2, 2), -1), *t, k=2, n_items=4)
    assert empty["recall@2"] == 0.0 and empty["coverage"] == 0.0
    assert empty["n_users_without_recs"] == 2


def test_csr_from_pairs_sorts_and_dedupes():
    indptr, indices = csr_from_pairs(np.array([2, 0, 2, 2, 0]), np.array([5, 1, 3, 5, 0]), 4)
    assert indptr.tolist() == [0, 2, 2, 4, 4]
    assert indices.tolist() == [0, 1, 3, 5]
    with pytest.raises(ValueError):
        csr_from_pairs(np.array([4]), np.array([0]), 4)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 8),
    n_items=st.integers(1, 12),
    k=st.integers(1, 6),
    width=st.integers(0, 8),
    duplicates=st.booleans(),
    coverage_mode=st.sampled_from(["default", "n_items", "candidates"]),
)
def test_matches_protocol_evaluate(seed, n_users, n_items, k, width, duplicates,
                                   coverage_mode):
    evaluate = _protocol_evaluate()
    rng = np.random.default_rng(seed)
    truth = [set(np.flatnonzero(rng.random(n_items) < 0.3).tolist()) for _ in range(n_users)]
    train = [set(np.flatnonzero(rng.random(n_items) < 0.3).tolist()) for _ in range(n_users)]
    recs = np.full((n_users, width), -1, dtype=np.int64)
    for u in range(n_users):
        length = int(rng.integers(0, width + 1))
        if duplicates:
            recs[u, :length] = rng.integers(0, n_items, length)
        else:
            length = min(length, n_items)
            recs[u, :length] = rng.permutation(n_items)[:length]
    candidates = None
    if coverage_mode == "candidates":
        candidates = set(np.flatnonzero(rng.random(n_items) < 0.5).tolist())
    n_items_arg = n_items if coverage_mode == "n_items" else None

    t, x = _csr(truth), _csr(train)
    ours = ranking_metrics(
        recs, *t, k=k, n_items=n_items_arg, exclude_indptr=x[0], exclude_indices=x[1],
        candidates=None if candidates is None else np.array(sorted(candidates), dtype=np.int64),
    )
    ref = evaluate(*_as_dicts(truth, train, recs), k=k, candidates=candidates,
                   n_items=n_items_arg)
    for key, value in ref.items():
        if key != "recall_definition":
            assert ours[key] == pytest.approx(value, abs=1e-9), key


def _brute_topk(scores, k, banned):
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for u, row in enumerate(scores):
        allowed = [i for i in range(len(row))
                   if not banned[u, i] and not np.isnan(row[i]) and row[i] != -np.inf]
        best = sorted(allowed, key=lambda i: (-row[i], i))[:k]
        out[u, : len(best)] = best
    return out


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 7),
    n_items=st.integers(1, 15),
    k=st.integers(1, 18),
    exclude_kind=st.sampled_from(["none", "csr", "mask"]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_topk_matches_brute_force(seed, n_users, n_items, k, exclude_kind, dtype):
    rng = np.random.default_rng(seed)
    # Few distinct values, so ties are everywhere; some -inf and NaN too.
    scores = rng.integers(0, 4, (n_users, n_items)).astype(dtype)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    scores[rng.random(scores.shape) < 0.05] = np.nan
    banned = rng.random(scores.shape) < 0.3
    if exclude_kind == "none":
        banned[:] = False
        exclude = None
    elif exclude_kind == "mask":
        exclude = banned
    else:
        exclude = csr_from_pairs(*np.nonzero(banned), n_users)
    before = scores.copy()
    got = topk(scores, k, exclude)
    assert got.dtype == np.int64 and got.shape == (n_users, k)
    np.testing.assert_array_equal(got, _brute_topk(scores, k, banned))
    rows, cols = np.nonzero(got >= 0)
    assert not banned[rows, got[rows, cols]].any()
    np.testing.assert_array_equal(scores, before)  # the input is never modified


def test_topk_blocks_and_ties(monkeypatch):
    monkeypatch.setattr(metrics, "_TOPK_BLOCK_ELEMENTS", 7)  # one row per block
    scores = np.zeros((5, 6))
    scores[:, 4] = 1.0
    exclude = csr_from_pairs(np.array([0, 0, 3]), np.array([4, 0, 1]), 5)
    got = topk(scores, 3, exclude)
    assert got.tolist() == [[1, 2, 3], [4, 0, 1], [4, 0, 1], [4, 0, 2], [4, 0, 1]]
    assert topk(scores[:, :2], 4).tolist() == [[0, 1, -1, -1]] * 5
    assert topk(np.array([[0.5, 0.5]]), 4).tolist() == [[0, 1, -1, -1]]


def test_serving_path_stays_torch_free():
    code = "import sys, unirec.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_csr_rows_and_left_padding() -> None:
    from unirec.store.csr import csr_from_lists, csr_rows, pad_left

    csr = csr_from_lists([np.array([1, 2, 3, 4]), np.array([], np.int64), np.array([7]),
                          np.array([5, 6])])
    assert pad_left(csr, 3).tolist() == [[2, 3, 4], [0, 0, 0], [0, 0, 7], [0, 5, 6]]
    indptr, indices = csr_rows(csr, np.array([3, -1, 0]))  # -1: no row, empty
    assert indptr.tolist() == [0, 2, 2, 6] and indices.tolist() == [5, 6, 1, 2, 3, 4]


def test_ndcg_per_user_averages_to_the_protocol_ndcg() -> None:
    """``ndcg_per_user`` (the ranker's paired gain, train.rank.min_z) is, per evaluated user,
    what ``ranking_metrics`` averages: users without truth are left out, -1 pads miss."""
    from unirec.metrics import ndcg_per_user, ranking_metrics

    rng = np.random.default_rng(3)
    n, items = 40, 30
    recs = np.stack([rng.permutation(np.arange(1, items + 1))[:10] for _ in range(n)])
    recs[::7, 8:] = -1
    sizes = rng.integers(0, 4, n)
    indptr = np.r_[0, np.cumsum(sizes)]
    indices = np.concatenate([rng.choice(np.arange(1, items + 1), s, replace=False)
                              for s in sizes])
    per = ndcg_per_user(recs, indptr, indices, 10)
    assert len(per) == int((sizes > 0).sum())
    want = ranking_metrics(recs, indptr, indices, k=10)["ndcg@10"]
    assert abs(per.mean() - want) < 1e-12
