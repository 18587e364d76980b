"""The recommenders unirec is measured against on MovieLens-100K, one small class each.

Why: PROTOCOL.md wants the peers a user would otherwise pick re-run in the same session as
unirec, tuned the same way, so the comparison does not lean on figures measured elsewhere.
Each peer follows implicit's tiny API: ``fit(X, item_features)`` on a binary users x items CSR
matrix (and, for the content peers, an items x features matrix), then ``scores(X)``, a dense
``(n_users, n_items)`` array: MovieLens-100K's catalogue is small enough to score in full.

- Collaborative (temporal protocol): MostPop, ItemKNN (cosine, top-k neighbours per item),
  EASE (closed form, Steck 2019), implicit's ALS.
- Content (cold_item protocol: the candidates never appear in training): Random, genre
  popularity (the user's genre shares weighted by how popular each genre's items are, summed
  over the item's genres), LightFM's WARP hybrid over item features (genres, year, decade;
  only where ``lightfm`` installs, see constraints.txt).
- Mixed protocol (new items compete with warm ones): the collaborative peers, which cannot
  rank a new item (parity 0 by construction), and LightFM's hybrid, which may also give each
  warm item an identity feature (``identity``; a new item is its content alone).

``GRIDS`` holds each peer's small tuning grid (the whole quality step has to fit in ~25
minutes on two busy cores), ``QUICK`` the one point ``make bench-quick`` tries. Every peer
runs on one thread (``threadpool_limits(1)`` around the step), as unirec's fits do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from unirec.metrics import topk


def binary(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """The binary users x items CSR matrix of (user index, item index) pairs."""
    x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)),
                      shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicate pairs count once
    return x


class MostPop:
    """Every user gets the items with the most training interactions."""

    stochastic = False

    def fit(self, x: sp.csr_matrix, item_features: Any = None) -> MostPop:
        self.pop = np.asarray(x.sum(axis=0)).ravel()
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.pop, x.shape).copy()


class ItemKNN:
    """Item-based kNN: cosine similarity, each item keeps its ``k`` nearest neighbours."""

    stochastic = False

    def __init__(self, k: int = 100) -> None:
        self.k = k

    def fit(self, x: sp.csr_matrix, item_features: Any = None) -> ItemKNN:
        gram = (x.T @ x).toarray()  # (items, items) co-occurrence counts
        norms = np.sqrt(np.diag(gram))
        sim = gram / np.maximum(np.outer(norms, norms), 1e-12)
        np.fill_diagonal(sim, 0.0)
        if self.k < sim.shape[0]:  # zero all but each column's k largest
            drop = np.argpartition(-sim, self.k, axis=0)[self.k:]
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self.sim = sim
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.sim)


class EASE:
    """EASE: B = I - P / diag(P) with P = (X'X + lambda I)^-1, diagonal forced to zero."""

    stochastic = False

    def __init__(self, lam: float = 200.0) -> None:
        self.lam = lam

    def fit(self, x: sp.csr_matrix, item_features: Any = None) -> EASE:
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        self.b = -p / np.diag(p)  # column j divided by P_jj
        np.fill_diagonal(self.b, 0.0)
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.b)


class ALS:
    """implicit's ALS (Hu, Koren, Volinsky 2008) on confidence 1 + alpha, one CPU thread."""

    stochastic = True

    def __init__(self, factors: int = 128, regularization: float = 20.0, alpha: float = 5.0,
                 iterations: int = 30, seed: int = 0) -> None:
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha,
                           iterations=iterations, random_state=seed)

    def fit(self, x: sp.csr_matrix, item_features: Any = None) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(**self.params, num_threads=1)
        self.model.fit(x.astype(np.float32), show_progress=False)
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return self.model.user_factors @ self.model.item_factors.T


class Random:
    """Uniform random scores: the floor any content model must clear on cold items."""

    stochastic = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: sp.csr_matrix, item_features: Any = None) -> Random:
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return np.random.default_rng(self.seed).random(x.shape)


class GenrePop:
    """Genre popularity match: sum over the item's genres of the user's share of that genre
    times the genre's popularity (mean interactions of its warm items) ** ``gamma``, divided
    by (number of the item's genres) ** ``beta``."""

    stochastic = False

    def __init__(self, beta: float = 0.5, gamma: float = 1.0) -> None:
        self.beta, self.gamma = beta, gamma

    def fit(self, x: sp.csr_matrix, item_features: sp.csr_matrix) -> GenrePop:
        self.genres = sp.csr_matrix(item_features, dtype=np.float64)  # (items, genres) 0/1
        counts = (x @ self.genres).toarray()  # (users, genres) genre counts per user
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
        pop = np.asarray(x.sum(axis=0)).ravel()  # (items,) interactions per item
        warm = self.genres[pop > 0]
        per_item = (warm.T @ pop[pop > 0]) / np.maximum(np.asarray(warm.sum(axis=0)).ravel(), 1)
        self.weights = share * per_item ** self.gamma  # (users, genres)
        n = np.asarray(self.genres.sum(axis=1)).ravel()
        self.norm = np.maximum(n, 1.0) ** self.beta
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(self.genres @ self.weights.T).T / self.norm


class LightFMHybrid:
    """LightFM with the WARP loss; items are their features only (row-normalised), users
    their identity, so a cold item is scored as well as a warm one with the same features."""

    stochastic = True

    def __init__(self, components: int = 64, epochs: int = 30, lr: float = 0.05,
                 identity: bool = False, seed: int = 0) -> None:
        self.components, self.epochs, self.lr, self.seed = components, epochs, lr, seed
        self.identity = identity

    def fit(self, x: sp.csr_matrix, item_features: sp.csr_matrix) -> LightFMHybrid:
        from lightfm import LightFM

        feats = sp.csr_matrix(item_features, dtype=np.float32)
        if self.identity:  # one column per item seen in training: new items get none
            seen = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
            ident = sp.csr_matrix((np.ones(len(seen), np.float32), (seen, np.arange(len(seen)))),
                                  shape=(x.shape[1], len(seen)))
            feats = sp.hstack([ident, feats], format="csr")
        rows = np.asarray(feats.sum(axis=1)).ravel()
        self.features = sp.diags(1.0 / np.maximum(rows, 1e-12)).astype(np.float32) @ feats
        self.model = LightFM(no_components=self.components, loss="warp",
                             learning_rate=self.lr, random_state=self.seed)
        self.model.fit(x.tocoo(), item_features=self.features, epochs=self.epochs,
                       num_threads=1)
        return self

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        item_bias, item_vecs = self.model.get_item_representations(self.features)
        _, user_vecs = self.model.get_user_representations()
        return user_vecs @ item_vecs.T + item_bias  # the user bias does not change a ranking


PEERS: dict[str, type] = {"MostPop": MostPop, "ItemKNN": ItemKNN, "EASE": EASE, "ALS": ALS,
                          "Random": Random, "GenrePop": GenrePop, "LightFM": LightFMHybrid}
# Which peers run on which protocol, in table order.
ON = {"temporal": ["MostPop", "ItemKNN", "EASE", "ALS"],
      "cold_item": ["Random", "GenrePop", "LightFM"],
      "mixed": ["MostPop", "ItemKNN", "EASE", "ALS", "LightFM"]}
# Tuning grids, chosen on the tuning carve (never test). Small on purpose: see the docstring.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "MostPop": [{}],
    "ItemKNN": [{"k": k} for k in (50, 100, 200, 400, 800)],
    "EASE": [{"lam": lam} for lam in (50.0, 100.0, 200.0, 500.0, 1000.0)],
    "ALS": [{"factors": f, "regularization": r} for f in (64, 128) for r in (5.0, 20.0, 50.0)],
    "Random": [{}],
    "GenrePop": [{"beta": b, "gamma": g} for b in (0.0, 0.5, 1.0) for g in (0.0, 1.0, 2.0)],
    "LightFM": [{"components": c, "epochs": e} for c in (32, 64) for e in (10, 30)],
}
# Per-protocol grids where they differ: on mixed, LightFM may also use warm items' ids.
PROTOCOL_GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "mixed": {"LightFM": [{"components": 32, "epochs": e, "identity": i}
                          for e in (10, 30) for i in (False, True)]},
}
QUICK: dict[str, list[dict[str, Any]]] = {
    "MostPop": [{}], "ItemKNN": [{"k": 100}], "EASE": [{"lam": 200.0}],
    "ALS": [{"factors": 64, "regularization": 20.0}], "Random": [{}],
    "GenrePop": [{"beta": 0.5, "gamma": 1.0}], "LightFM": [{"components": 32, "epochs": 10}],
}


def grid(name: str, protocol: str, quick: bool = False) -> list[dict[str, Any]]:
    """The points peer ``name`` tries on ``protocol`` (one point for a quick run)."""
    if quick:
        return QUICK[name]
    return PROTOCOL_GRIDS.get(protocol, {}).get(name, GRIDS[name])


def available(name: str) -> str | None:
    """None when peer ``name`` can run here, else why not (LightFM often fails to build)."""
    module = {"ALS": "implicit", "LightFM": "lightfm"}.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as err:
        return f"{module} is not installed ({err})"
    return None


def top_k(scores: np.ndarray, x: sp.csr_matrix, k: int = 10,
          candidates: np.ndarray | None = None) -> np.ndarray:
    """Each user's top ``k`` item indices, never a train item nor one outside ``candidates``
    (a boolean mask over items); ties go to the lower item index (``unirec.metrics.topk``)."""
    scores = np.array(scores, dtype=np.float64)
    if candidates is not None:
        scores[:, ~candidates] = -np.inf
    return topk(scores, k, exclude=(x.indptr.astype(np.int64), x.indices.astype(np.int64)))
