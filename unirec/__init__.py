"""unirec: one JSON document of users, items and interactions in; a recommender out.

The public API. Heavy modules load on first use, so ``import unirec`` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Before torch (and its OpenMP runtime) loads: idle intra-op threads sleep instead of
# spin-waiting. On a shared 2-core machine spinning threads fight the other processes for the
# cores: the training step measured 15-40x slower with the spinning default under load
# (docs/benchmarks.md, "Fit step"). A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from unirec.errors import (
    ConfigError,
    DataError,
    MissingExtraError,
    NotFittedError,
    StoreError,
    UnirecError,
    UnknownComponentError,
    require_extra,
)

# Eager on purpose: the subpackage unirec.featurize shares the function's name, and the
# function must win the attribute.
from unirec.featurize import featurize  # noqa: E402
from unirec.version import __version__  # noqa: E402

if TYPE_CHECKING:
    from unirec.config import Config, load_config
    from unirec.registry import Registry
    from unirec.serve.api import recommend, score, similar
    from unirec.serve.evaluate import evaluate
    from unirec.serve.recommender import Recommender
    from unirec.store import Store

def register_encoder(op: str, encoder: Any = None, *, replace: bool = False) -> Any:
    """Register a tower encoder for features compiled by ``op`` (decorator or call).

    The class is built as ``Encoder(feature, dim, shared)`` and returns one (B, dim) token;
    see ``unirec.model.encoders`` for the built-ins, registered the same way.
    """
    require_extra("train", "register_encoder")
    from unirec.model.encoders import ENCODERS

    return ENCODERS.register(op, encoder, replace=replace)


def add_encoder(op: str, encoder: Any) -> Any:
    """The seed's ``pipeline.add_encoder(kind, Encoder)``: use ``encoder`` for ``op`` features,
    replacing the built-in."""
    return register_encoder(op, encoder, replace=True)


def register_loss(name: str, loss: Any = None, *, replace: bool = False) -> Any:
    """Register a training loss: a class whose instances map a ``LossInput`` to a scalar."""
    require_extra("train", "register_loss")
    from unirec.train.losses import LOSSES

    return LOSSES.register(name, loss, replace=replace)


def fit(store: Any = "unirec-store", config: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Train the two-tower model on a store (see ``unirec.train.loop.fit``)."""
    from unirec.train import fit as _fit

    return _fit(store, config, **kwargs)


def explain(user: Any, items: Any = None, k: int = 10, **kwargs: Any) -> list[dict[str, Any]]:
    """Why ``items`` (default: ``user``'s top-``k``) are recommended: see
    ``unirec.serve.explain.explain``. Needs the train extra (the towers)."""
    require_extra("train", "unirec.explain (the towers compute explanations)")
    from unirec.serve.explain import explain as run

    return run(user, items, k, **kwargs)


_LAZY = {
    "recommend": ("unirec.serve.api", "recommend"),
    "similar": ("unirec.serve.api", "similar"),
    "score": ("unirec.serve.api", "score"),
    "evaluate": ("unirec.serve.evaluate", "evaluate"),
    "Recommender": ("unirec.serve.recommender", "Recommender"),
    "Store": ("unirec.store", "Store"),
    "Config": ("unirec.config", "Config"),
    "load_config": ("unirec.config", "load_config"),
    "Registry": ("unirec.registry", "Registry"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'unirec' has no attribute {name!r}")


__all__ = [
    "add_encoder",
    "evaluate",
    "explain",
    "recommend",
    "Recommender",
    "score",
    "similar",
    "fit",
    "register_encoder",
    "register_loss",
    "Config",
    "ConfigError",
    "DataError",
    "MissingExtraError",
    "NotFittedError",
    "Registry",
    "Store",
    "StoreError",
    "UnirecError",
    "UnknownComponentError",
    "__version__",
    "featurize",
    "load_config",
]
