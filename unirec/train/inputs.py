"""What training reads from the store, loaded once: the only door is ``unirec.store``.

Entity tensors and frozen embedding tables go whole onto the device; training positives
become sorted keys for the "never a negative" mask; validation users get the history they
had when their validation slice began.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from unirec.errors import StoreError
from unirec.store import Store

SUPPORTED_STORE_FORMAT = 1


@dataclass
class Inputs:
    """Everything the loop needs besides the shards."""

    manifest: dict[str, Any]
    users: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]
    text: torch.Tensor | None
    image: torch.Tensor | None
    positive_keys: torch.Tensor  # sorted user * n_items + item of training samples
    user_trained: torch.Tensor  # (n_users,) bool
    val_users: np.ndarray  # (V,) user indices with a validation slice
    val_history: np.ndarray  # (V, L) their history at the start of validation
    val_truth: tuple[np.ndarray, np.ndarray]  # CSR (indptr, indices) over val_users
    val_exclude: tuple[np.ndarray, np.ndarray]  # CSR of their training items
    train_shards: list[Path]
    n_users: int
    n_items: int


def check_store(store: Store) -> dict[str, Any]:
    """Refuse a store this version cannot train on, saying why."""
    m = store.manifest
    if m.get("store_format") != SUPPORTED_STORE_FORMAT or "features" not in m:
        raise StoreError(f"store {str(store.path)!r} was written by unirec "
                         f"{m.get('unirec_version', '?')} (format {m.get('store_format')}); "
                         "re-run `unirec featurize` with this version")
    if not m["shards"]["train"]["files"]:
        raise StoreError("the store has no training samples: check the split settings")
    return m


def _csr(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR over ``rows`` (sorted user indices) of (user, item) pairs."""
    pos = np.searchsorted(rows, users)
    order = np.lexsort((items, pos))
    counts = np.bincount(pos, minlength=len(rows))
    return np.concatenate([[0], np.cumsum(counts)]), items[order].astype(np.int64)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in load_file(str(path)).items()}


def load_inputs(store: Store) -> Inputs:
    """Read manifest, tensors and the validation protocol (CPU tensors; the loop moves them)."""
    manifest = check_store(store)
    tdir = store.path / "tensors"
    users, items = _tensors(tdir / "users.safetensors"), _tensors(tdir / "items.safetensors")
    text = _tensors(tdir / "text_embeddings.safetensors")["embedding"]
    image = _tensors(tdir / "image_embeddings.safetensors")["embedding"]
    n_users, n_items = users["_index"].shape[0], items["_index"].shape[0]
    with store.connect() as con:
        train = con.execute("SELECT DISTINCT user_index, item_index FROM samples "
                            "WHERE split = 'train'").fetchnumpy()
        val = con.execute("SELECT user_index, item_index FROM samples WHERE split = 'val'"
                          ).fetchnumpy()
        first = con.sql("SELECT user_index, history FROM samples WHERE split = 'val' QUALIFY "
                        "row_number() OVER (PARTITION BY user_index ORDER BY time, position) = 1 "
                        "ORDER BY user_index").to_arrow_table()
    keys = np.unique(train["user_index"].astype(np.int64) * n_items + train["item_index"])
    trained = np.zeros(n_users, bool)
    trained[train["user_index"]] = True
    val_users = first.column("user_index").to_numpy().astype(np.int64)
    hist = first.column("history").combine_chunks()
    length = manifest["samples"]["history_length"]
    val_history = hist.flatten().to_numpy().reshape(len(val_users), length) if len(val_users) \
        else np.zeros((0, length), np.int32)
    in_val = np.isin(train["user_index"], val_users)
    return Inputs(
        manifest=manifest, users=users, items=items,
        text=text if text.shape[1] else None, image=image if image.shape[1] else None,
        positive_keys=torch.from_numpy(keys), user_trained=torch.from_numpy(trained),
        val_users=val_users, val_history=val_history.astype(np.int64),
        val_truth=_csr(val["user_index"], val["item_index"], val_users),
        val_exclude=_csr(train["user_index"][in_val], train["item_index"][in_val], val_users),
        train_shards=[store.path / "shards" / f for f in manifest["shards"]["train"]["files"]],
        n_users=n_users, n_items=n_items,
    )
