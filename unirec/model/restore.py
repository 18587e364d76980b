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
from unirec.model.checkpoint import load_grown_weights, load_weights
from unirec.model.folder import BUNDLE_META, appends_since, check_fresh, read_meta
from unirec.model.inputs import check_store, load_tensors, trained_mask
from unirec.model.newitems import load_new_item_map
from unirec.model.towers import TwoTower
from unirec.store import Store, serving_histories


def train_config(store: str | Path) -> TrainConfig:
    """The train config the model in ``store/model`` was fitted with."""
    st = Store(store)
    model_dir = st.path / "model"
    if not all((model_dir / f).is_file() for f in ("config.json", "model.safetensors",
                                                    BUNDLE_META)):
        raise NotFittedError(f"no fitted model in {str(store)!r}: run `unirec fit --store "
                             f"{store}` first")
    check_fresh(read_meta(model_dir), st.manifest, model_dir, store)
    return TrainConfig(**json.loads((model_dir / "config.json").read_text())["train"])


def predates_append(store: Store) -> bool:
    """True when the model was trained before an append to the store (``featurize
    --append``): its tables lack the new rows until ``fit --warm-start``. Refused when an
    append since refitted the statistics (the old rows no longer mean the same)."""
    bundle = store.path / "model" / "bundle.json"
    if not bundle.is_file():
        return False
    missed = appends_since(store.manifest, json.loads(bundle.read_text())["store"])
    if missed and any(a.get("refit_stats") for a in missed):
        raise NotFittedError(f"the model in {str(store.path / 'model')!r} predates "
                             "`featurize --refit-stats`: its inputs changed meaning; run "
                             f"`unirec fit --store {store.path}`")
    return bool(missed)


@torch.no_grad()
def load_model(store: str | Path, device: str | torch.device = "cpu") -> TwoTower:
    """The fitted ``TwoTower`` of ``store`` in eval mode on ``device`` (CPU by default).

    Its item tower over every item index reproduces ``model/item_embeddings.npy``; its user
    tower, fed :func:`user_histories`, reproduces ``model/user_embeddings.npy``.
    """
    cfg = train_config(store)
    st = Store(store)
    manifest = check_store(st)
    users, items, text, image = load_tensors(st)
    # a refit model (train.refit) trained on train + validation: its trained users and its
    # item popularity (which item ids are trained) count the validation samples too
    summary = json.loads((st.path / "model" / "config.json").read_text()).get("summary", {})
    splits = "('train', 'val')" if summary.get("refit_epochs", 0) else "('train')"
    with st.connect() as con:
        pairs = con.execute("SELECT user_index, item_index, weight FROM samples "
                            f"WHERE split IN {splits}").fetchnumpy()
    trained = trained_mask(np.unique(pairs["user_index"]), users["_index"].shape[0])
    if summary.get("refit_epochs", 0):
        pop = np.bincount(pairs["item_index"].astype(np.int64),
                          weights=pairs["weight"].astype(np.float64),
                          minlength=items["popularity"].shape[0])
        items = {**items, "popularity": torch.from_numpy(pop.astype(np.float32))}
    model = TwoTower(manifest, users, items, text, image, trained, cfg)
    model.to(device)
    if predates_append(st):  # old rows as trained, new rows zero: new entities by content
        try:
            load_grown_weights(st.path / "model" / "model.safetensors", model)
        except ValueError as exc:
            raise NotFittedError(f"the model in {str(st.path / 'model')!r} cannot be mapped "
                                 f"onto the appended store ({exc}): run `unirec fit --store "
                                 f"{store}`") from None
    else:
        load_weights(st.path / "model" / "model.safetensors", model)
    load_new_item_map(model, st.path / "model")
    return model.eval()


def user_histories(store: str | Path) -> np.ndarray:
    """(n_users + 1, L) int64: every known user's serving history, as ``fit`` embedded them."""
    st = Store(store)
    return serving_histories(st, st.manifest["samples"]["history_length"])
