"""The bench's peers (bench/peers.py) on tiny matrices with a known right answer.

Two groups of users each like one half of the catalogue (a block "checkerboard"); every user
has seen some of their half. A peer that learns anything must fill the rest of a user's top
list from their own half, where uniform guessing gets half of it right.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench import peers

N_USERS, N_ITEMS, K = 40, 60, 5


def blocks(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Train matrix, each user's group (0/1) and each item's group (first half: 0)."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(N_USERS) % 2
    item_group = (np.arange(N_ITEMS) >= N_ITEMS // 2).astype(int)
    liked = user_group[:, None] == item_group[None, :]
    # popularity skew inside each half (0.6 down to 0.2), so MostPop has something to find
    half = N_ITEMS // 2
    p = np.where(liked, 0.6 - 0.4 * (np.arange(N_ITEMS) % half) / half, 0.0)
    seen = rng.random((N_USERS, N_ITEMS)) < p
    seen[np.arange(N_USERS), np.where(user_group == 0, 0, N_ITEMS // 2)] = True
    users, items = np.nonzero(seen)
    return peers.binary(users, items, N_USERS, N_ITEMS), user_group, item_group


def in_group_share(top: np.ndarray, user_group: np.ndarray, item_group: np.ndarray) -> float:
    valid = top >= 0
    return float((item_group[np.where(valid, top, 0)] == user_group[:, None])[valid].mean())


@pytest.mark.parametrize("name,params", [("ItemKNN", {"k": 10}), ("EASE", {"lam": 10.0}),
                                         ("ALS", {"factors": 4, "regularization": 0.1,
                                                  "iterations": 10})])
def test_collaborative_peers_recover_the_blocks(name: str, params: dict) -> None:
    if peers.available(name):
        pytest.skip(peers.available(name))
    x, ug, ig = blocks()
    with threadpool_limits(1):
        model = peers.PEERS[name](**params).fit(x)
        top = peers.top_k(model.scores(x), x, K)
    assert in_group_share(top, ug, ig) > 0.95
    random_top = peers.top_k(peers.Random(seed=1).fit(x).scores(x), x, K)
    assert in_group_share(random_top, ug, ig) < 0.75  # guessing gets about half


def test_top_k_never_returns_train_items_or_non_candidates() -> None:
    x, _, _ = blocks()
    cands = np.zeros(N_ITEMS, bool)
    cands[::3] = True
    top = peers.top_k(peers.MostPop().fit(x).scores(x), x, K, cands)
    dense = x.toarray() > 0
    for u, row in enumerate(top):
        row = row[row >= 0]
        assert cands[row].all() and not dense[u, row].any()
        assert len(set(row.tolist())) == len(row)


def test_mostpop_ranks_by_training_counts() -> None:
    x, _, _ = blocks()
    pop = np.asarray(x.sum(axis=0)).ravel()
    scores = peers.MostPop().fit(x).scores(x)
    assert np.array_equal(scores[0], pop) and np.array_equal(scores[-1], pop)


def test_ease_has_a_zero_diagonal_and_shrinks_with_lambda() -> None:
    x, _, _ = blocks()
    small, large = peers.EASE(1.0).fit(x), peers.EASE(1e4).fit(x)
    assert np.allclose(np.diag(small.b), 0.0)
    assert np.abs(large.b).sum() < np.abs(small.b).sum()


def cold_split() -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """The blocks with a third of each half made cold (no training interactions); items'
    features: their group as a one-hot 'genre'."""
    x, ug, ig = blocks()
    cold = np.arange(N_ITEMS) % 3 == 2
    x = sp.csr_matrix(x.multiply(~cold[None, :]))
    x.eliminate_zeros()
    feats = sp.csr_matrix(np.eye(2, dtype=np.float32)[ig])
    return x, feats, cold, ug, ig


@pytest.mark.parametrize("name,params", [("GenrePop", {"beta": 0.5, "gamma": 1.0}),
                                         ("LightFM", {"components": 8, "epochs": 20}),
                                         ("LightFM", {"components": 8, "epochs": 20,
                                                      "identity": True})])
def test_content_peers_send_cold_items_to_their_group(name: str, params: dict) -> None:
    if peers.available(name):
        pytest.skip(peers.available(name))
    x, feats, cold, ug, ig = cold_split()
    with threadpool_limits(1):
        model = peers.PEERS[name](**params).fit(x, feats)
        top = peers.top_k(model.scores(x), x, 3, cold)
    assert cold[top[top >= 0]].all()
    assert in_group_share(top, ug, ig) > 0.95


def test_random_is_seeded_and_uniform() -> None:
    x, _, _ = blocks()
    a, b = peers.Random(seed=3).fit(x).scores(x), peers.Random(seed=3).fit(x).scores(x)
    assert np.array_equal(a, b) and a.shape == x.shape
    assert not np.array_equal(a, peers.Random(seed=4).fit(x).scores(x))


def test_every_peer_has_a_grid_and_a_quick_point() -> None:
    for names in peers.ON.values():
        for name in names:
            assert peers.GRIDS[name] and len(peers.QUICK[name]) == 1
            for params in peers.GRIDS[name] + peers.QUICK[name]:
                peers.PEERS[name](**params)  # every grid point is a valid constructor call
    for protocol, grids in peers.PROTOCOL_GRIDS.items():
        for name, points in grids.items():
            assert name in peers.ON[protocol] and peers.grid(name, protocol) == points
            for params in points:
                peers.PEERS[name](**params)
    assert peers.grid("LightFM", "mixed", quick=True) == peers.QUICK["LightFM"]
