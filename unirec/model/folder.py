"""The model folder's identity: what a fitted model records of the store it was trained on,
so every reader can tell a model from an older featurize run. No heavy imports (serving a
known user reads it)."""

from __future__ import annotations

from typing import Any


def store_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What distinguishes one featurize run's output from another's (a model records it)."""
    return {"input_sha256": manifest["input"].get("sha256"),
            "config_hash": manifest["config_hash"], "counts": manifest["counts"]}
