"""The model folder's identity: what a fitted model records of the store it was trained on,
and the one rule by which every reader of ``store/model`` (the numpy recommender, the
towers rebuilt for new records and ONNX export) tells a model from an older featurize run.
No heavy imports: serving a known user reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unirec.errors import NotFittedError
from unirec.store.lineage import appends_since, store_identity

__all__ = ["BUNDLE_META", "appends_since", "check_fresh", "read_meta", "store_identity"]

BUNDLE_META = "bundle.json"
"""The model folder's description, written last by fit: which store run it was trained on."""


def check_fresh(meta: dict[str, Any], manifest: dict[str, Any], model_dir: Path,
                store: str | Path) -> None:
    """Refuse (``NotFittedError``) a model whose ``meta`` (its ``bundle.json``) names another
    featurize run than ``manifest``: input hash, config hash and counts must all agree, or
    ``manifest``'s store must be that run with appends (``featurize --append``): such a model
    keeps being served, for what it knows, until ``fit --warm-start`` replaces it."""
    if appends_since(manifest, meta.get("store")) is None:
        raise NotFittedError(f"the model in {str(model_dir)!r} was trained before the store "
                             f"was featurized again: run `unirec fit --store {store}`")


def read_meta(model_dir: Path) -> dict[str, Any]:
    """The model folder's ``bundle.json``."""
    return json.loads((model_dir / BUNDLE_META).read_text())
