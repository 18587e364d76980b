"""Which featurize run a store is, and which runs it grew from by ``featurize --append``.

A model records the identity of the store it was trained on (``model/bundle.json``); an
append records the identity of the store before it (``ancestors`` in the manifest, newest
first) beside its own entry (``appends``). Here, in the store package, because featurize
writes the lineage and model, serve and train read it. Plain functions on the manifest dict.
"""

from __future__ import annotations

from typing import Any


def store_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What distinguishes one featurize run's output from another's (a model records it)."""
    return {"input_sha256": manifest["input"].get("sha256"),
            "config_hash": manifest["config_hash"], "counts": manifest["counts"]}


def appends_since(manifest: dict[str, Any], identity: dict[str, Any]
                  ) -> list[dict[str, Any]] | None:
    """The appends (``featurize --append``, oldest first) that made ``manifest``'s store out
    of the store a model with ``identity`` was trained on: ``[]`` for that store itself,
    None when the store was featurized again instead (the model does not carry over)."""
    if identity == store_identity(manifest):
        return []
    ancestors = manifest.get("ancestors", [])  # newest first, one per append
    if identity not in ancestors:
        return None
    return manifest["appends"][len(manifest["appends"]) - 1 - ancestors.index(identity):]
