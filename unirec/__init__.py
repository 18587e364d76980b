"""unirec: one JSON document of users, items and interactions in; a recommender out."""

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

__all__ = [
    "ConfigError",
    "DataError",
    "MissingExtraError",
    "NotFittedError",
    "StoreError",
    "UnirecError",
    "UnknownComponentError",
    "__version__",
]
