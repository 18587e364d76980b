"""What training reads from the store, loaded once: the only door is ``unirec.store``.

Entity tensors and frozen embedding tables go whole onto the device; training positives
become sorted keys for the "never a negative" mask; validation users get the history they
had when their validation slice began. Every history is gathered from one array, the
store's user sequence (``sequence``), by ``unirec.model.inputs.gather_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from unirec.errors import StoreError
from unirec.store import SEQUENCES_FILE, STORE_FORMAT, Store
from unirec.store.csr import Csr, csr_from_pairs


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
    sequence: torch.Tensor  # (N,) int32 every user's items in time order (samples' hend)
    val_truth: tuple[np.ndarray, np.ndarray]  # CSR (indptr, indices) over val_users
    val_exclude: tuple[np.ndarray, np.ndarray]  # CSR of their training items
    train_shards: list[Path]
    n_users: int
    n_items: int


def check_store(store: Store) -> dict[str, Any]:
    """Refuse a store this version cannot train on, saying why."""
    m = store.manifest
    if m.get("store_format") != STORE_FORMAT or "features" not in m:
        raise StoreError(f"store {str(store.path)!r} has format {m.get('store_format')} "
                         f"(written by unirec {m.get('unirec_version', '?')}); this version "
                         f"reads format {STORE_FORMAT}: re-run `unirec featurize DATA --store "
                         f"{store.path}`")
    if not m["shards"]["train"]["files"]:
        raise StoreError("the store has no training samples: check the split settings")
    return m


def _csr(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> Csr:
    """CSR over ``rows`` (sorted user indices) of (user, item) pairs."""
    return csr_from_pairs(np.searchsorted(rows, users), items, len(rows))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in load_file(str(path)).items()}


def load_tensors(store: Store) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                        torch.Tensor | None, torch.Tensor | None]:
    """The store's user and item feature tensors and its frozen text and image tables (None
    when no field has that kind): what the two-tower is built from, for fit and for load."""
    tdir = store.path / "tensors"
    users, items = _tensors(tdir / "users.safetensors"), _tensors(tdir / "items.safetensors")
    text = _tensors(tdir / "text_embeddings.safetensors")["embedding"]
    image = _tensors(tdir / "image_embeddings.safetensors")["embedding"]
    return users, items, text if text.shape[1] else None, image if image.shape[1] else None


def trained_mask(user_index: np.ndarray, n_users: int) -> torch.Tensor:
    """(n_users,) bool: the users with a training sample (their id row was trained)."""
    trained = np.zeros(n_users, bool)
    trained[np.asarray(user_index, np.int64)] = True
    return torch.from_numpy(trained)


def load_sequences(store: Store) -> dict[str, np.ndarray]:
    """The store's CSR of user sequences: ``offsets``, ``items``, ``times``, ``serve_stop``
    (see ``unirec.featurize.samples.write_sequences``)."""
    return load_file(str(store.path / SEQUENCES_FILE))


def load_inputs(store: Store) -> Inputs:
    """Read manifest, tensors and the validation protocol (CPU tensors; the loop moves them)."""
    manifest = check_store(store)
    users, items, text, image = load_tensors(store)
    n_users, n_items = users["_index"].shape[0], items["_index"].shape[0]
    with store.connect() as con:
        train = con.execute("SELECT DISTINCT user_index, item_index FROM samples "
                            "WHERE split = 'train'").fetchnumpy()
        val = con.execute("SELECT user_index, item_index FROM samples WHERE split = 'val'"
                          ).fetchnumpy()
        first = con.execute(
            "SELECT user_index, history_end, history_length FROM samples WHERE split = 'val' "
            "QUALIFY row_number() OVER (PARTITION BY user_index ORDER BY time, position) = 1 "
            "ORDER BY user_index").fetchnumpy()
    keys = np.unique(train["user_index"].astype(np.int64) * n_items + train["item_index"])
    val_users = np.asarray(first["user_index"], np.int64)
    sequence = torch.from_numpy(load_sequences(store)["items"])
    val_history = gather_history(sequence, torch.tensor(first["history_end"]),
                                 torch.tensor(first["history_length"]),
                                 manifest["samples"]["history_length"]).numpy()
    in_val = np.isin(train["user_index"], val_users)
    return Inputs(
        manifest=manifest, users=users, items=items,
        text=text, image=image, positive_keys=torch.from_numpy(keys),
        user_trained=trained_mask(train["user_index"], n_users),
        val_users=val_users, val_history=val_history.astype(np.int64), sequence=sequence,
        val_truth=_csr(val["user_index"], val["item_index"], val_users),
        val_exclude=_csr(train["user_index"][in_val], train["item_index"][in_val], val_users),
        train_shards=[store.path / "shards" / f for f in manifest["shards"]["train"]["files"]],
        n_users=n_users, n_items=n_items,
    )


def gather_history(items: torch.Tensor, end: torch.Tensor, length: torch.Tensor,
                   width: int) -> torch.Tensor:
    """``(B, width)`` histories by index arithmetic: row b is ``items[end[b] - length[b]:
    end[b]]`` left-padded with 0, most recent last (what the ``samples`` view shows).

    ``items`` is the store's concatenated user sequence (int32, on the batch's device);
    ``end`` and ``length`` come from the shards or ``samples``. One gather, no loop: the
    padding slots read a clamped in-range index and are zeroed by the mask.
    """
    steps = torch.arange(-width, 0, device=end.device)
    index = end.long().unsqueeze(1) + steps
    real = steps >= -length.long().clamp(max=width).unsqueeze(1)
    picked = items[index.clamp(min=0)]
    return torch.where(real, picked, torch.zeros((), dtype=picked.dtype, device=picked.device))

