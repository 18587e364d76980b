"""Rebuild the trained two-tower model from a store, for serving new records and export.

``fit`` leaves the weights (``model/model.safetensors``) and the train config
(``model/config.json``); the feature tensors and the frozen text/image tables stay in the
store. Together they rebuild exactly the network ``fit`` used to compute
``user_embeddings.npy`` / ``item_embeddings.npy``: same encoders, same buffers, same
"trained" masks for the id embeddings (derived again from the training samples, since masks
are data, not weights). Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from unirec.config import TrainConfig
from unirec.errors import NotFittedError
from unirec.model.checkpoint import load_weights
from unirec.model.inputs import _tensors, check_store
from unirec.model.towers import TwoTower
from unirec.store import Store, serving_histories


def _trained_users(store: Store, n_users: int) -> torch.Tensor:
    """(n_users,) bool: users with at least one training sample (their id row was trained)."""
    with store.connect() as con:
        rows = con.execute("SELECT DISTINCT user_index FROM samples WHERE split = 'train'"
                           ).fetchnumpy()["user_index"]
    trained = np.zeros(n_users, bool)
    trained[np.asarray(rows, np.int64)] = True
    return torch.from_numpy(trained)


def train_config(store: str | Path) -> TrainConfig:
    """The train config the model in ``store/model`` was fitted with."""
    st = Store(store)
    path = st.path / "model" / "config.json"
    if not path.is_file() or not (st.path / "model" / "model.safetensors").is_file():
        raise NotFittedError(f"no fitted model in {str(store)!r}: run `unirec fit --store "
                             f"{store}` first")
    saved = json.loads(path.read_text())
    if saved.get("store_config_hash") != st.manifest["config_hash"]:
        raise NotFittedError(f"the model in {str(st.path / 'model')!r} was trained before the "
                             f"store was featurized again: run `unirec fit --store {store}`")
    return TrainConfig(**saved["train"])


@torch.no_grad()
def load_model(store: str | Path, device: str | torch.device = "cpu") -> TwoTower:
    """The fitted ``TwoTower`` of ``store`` in eval mode on ``device`` (CPU by default).

    Its item tower over every item index reproduces ``model/item_embeddings.npy``; its user
    tower, fed :func:`user_histories`, reproduces ``model/user_embeddings.npy``.
    """
    cfg = train_config(store)
    st = Store(store)
    manifest = check_store(st)
    tdir = st.path / "tensors"
    users, items = _tensors(tdir / "users.safetensors"), _tensors(tdir / "items.safetensors")
    text = _tensors(tdir / "text_embeddings.safetensors")["embedding"]
    image = _tensors(tdir / "image_embeddings.safetensors")["embedding"]
    trained = _trained_users(st, users["_index"].shape[0])
    model = TwoTower(manifest, users, items, text if text.shape[1] else None,
                     image if image.shape[1] else None, trained, cfg)
    model.to(device)
    load_weights(st.path / "model" / "model.safetensors", model)
    return model.eval()


def user_histories(store: str | Path) -> np.ndarray:
    """(n_users + 1, L) int64: every known user's serving history, as ``fit`` embedded them."""
    st = Store(store)
    return serving_histories(st, st.manifest["samples"]["history_length"])
