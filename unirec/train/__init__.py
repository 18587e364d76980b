"""The training core: encoders, fusion, towers, losses, and the loop (``fit``)."""

from __future__ import annotations

from typing import Any

from unirec.errors import require_extra


def fit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`unirec.train.loop.fit` (imported lazily: it imports torch)."""
    require_extra("train", "`unirec fit` (training)")
    from unirec.train.loop import fit as _fit

    return _fit(*args, **kwargs)
