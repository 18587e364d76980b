"""unirec: one JSON document of users, items and interactions in; a recommender out.

The public API. Heavy modules load on first use, so ``import unirec`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unirec.errors import (
    ConfigError,
    DataError,
    MissingExtraError,
    NotFittedError,
    StoreError,
    UnirecError,
    UnknownComponentError,
)

__version__ = "0.1.0"

# Eager on purpose: the subpackage unirec.featurize shares the function's name, and the
# function must win the attribute.
from unirec.featurize import featurize  # noqa: E402

if TYPE_CHECKING:
    from unirec.config import Config, load_config
    from unirec.registry import Registry
    from unirec.store import Store

_LAZY = {
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
