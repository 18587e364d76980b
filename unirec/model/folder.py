"""The model folder's identity: what a fitted model records of the store it was trained on,
and the one rule by which every reader of ``store/model`` (the numpy recommender, the
towers rebuilt for new records and ONNX export) tells a model from an older featurize run.
No heavy imports: serving a known user reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unirec.errors import NotFittedError

BUNDLE_META = "bundle.json"
"""The model folder's description, written last by fit: which store run it was trained on."""


def store_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What distinguishes one featurize run's output from another's (a model records it)."""
    return {"input_sha256": manifest["input"].get("sha256"),
            "config_hash": manifest["config_hash"], "counts": manifest["counts"]}


def check_fresh(meta: dict[str, Any], manifest: dict[str, Any], model_dir: Path,
                store: str | Path) -> None:
    """Refuse (``NotFittedError``) a model whose ``meta`` (its ``bundle.json``) names another
    featurize run than ``manifest``: input hash, config hash and counts must all agree."""
    if meta.get("store") != store_identity(manifest):
        raise NotFittedError(f"the model in {str(model_dir)!r} was trained before the store "
                             f"was featurized again: run `unirec fit --store {store}`")


def read_meta(model_dir: Path) -> dict[str, Any]:
    """The model folder's ``bundle.json``."""
    return json.loads((model_dir / BUNDLE_META).read_text())
