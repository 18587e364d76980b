"""What fit leaves behind: ``store/model`` (weights, config, embeddings, metrics, plot) and
``user_embeddings`` / ``item_embeddings`` tables for SQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from unirec.config import TrainConfig
from unirec.errors import StoreError
from unirec.model import workdir
from unirec.model.affinity import fit_affinity
from unirec.model.bundle import write_bundle
from unirec.model.checkpoint import load_weights, save_weights
from unirec.model.inputs import Inputs
from unirec.model.newitems import fit_new_item_map, save_new_item_map
from unirec.model.plot import plot_metrics
from unirec.model.ranker import RANK_DIR, RankResult
from unirec.model.towers import TwoTower
from unirec.store import Store, serving_histories, write_table
from unirec.store.layout import SIDES, Side


def selection_score(row: dict[str, Any], k: int) -> float:
    """What early stopping and the kept epoch maximise: validation NDCG@K, plus the cold
    slice's NDCG@K when there is one (warm and new items both count); else -train loss."""
    if f"val_ndcg@{k}" not in row:
        return -row["train_loss"]
    return row[f"val_ndcg@{k}"] + row.get(f"val_cold_ndcg@{k}", 0.0)



@torch.no_grad()
def embed_all(model: TwoTower, n: int, side: str, device: torch.device,
              history: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """(n, served width) float32 vectors for entity indices 0..n-1 (row 0 = padding)."""
    model.eval()
    out = []
    tower = model.user if side == "user" else model.item
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(s + chunk, n), device=device)
        hist = torch.from_numpy(history[s:s + chunk]).to(device) if history is not None \
            else None
        out.append(tower(idx, hist).float().cpu().numpy())
    return np.concatenate(out)


def _write_table(store: Path, side: Side, vectors: np.ndarray) -> None:
    name, index, id_col, map_name = f"{side.name}_embeddings", side.index, side.id, side.map
    flat = pa.array(vectors[1:].reshape(-1), pa.float32())
    arrow = pa.table({index: np.arange(1, len(vectors), dtype=np.int32),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    write_table(store, name, arrow, f"SELECT m.{index}, m.{id_col}, e.embedding FROM _new e "
                f"JOIN {map_name} m USING ({index}) ORDER BY m.{index}")


def write_outputs(store: Store, model: TwoTower, inp: Inputs, cfg: TrainConfig,
                  state: dict[str, Any], device: torch.device,
                  ranker: RankResult | None = None) -> dict[str, Any]:
    """Best weights -> embeddings for every user (with their latest history) and item, and
    the ranking stage's files (``rank/``), in a new model folder swapped in whole
    (``workdir.publish``); then the SQL tables."""
    work = workdir.work_dir(store)
    if not (work / "best.safetensors").is_file():
        raise StoreError("training produced no usable epoch (the loss was never finite): "
                         "check the data (too few interactions?) and train.lr")
    load_weights(work / "best.safetensors", model)
    ridge = fit_new_item_map(model, cfg.new_item_scale) if cfg.new_item_map else None
    length = inp.manifest["samples"]["history_length"]
    histories = serving_histories(store, length)
    affinity = fit_affinity(model, inp.manifest, histories, cfg.new_item_affinity, cfg.seed)
    users = embed_all(model, inp.n_users, "user", device, histories)
    items = embed_all(model, inp.n_items, "item", device)
    best = max(state["history"], key=lambda r: selection_score(r, cfg.eval_k))
    summary = {"epochs": state["epoch"], "best_epoch": best["epoch"], "best": best,
               "n_users": inp.n_users - 1, "n_items": inp.n_items - 1, "dim": cfg.dim,
               "refit_epochs": state.get("refit_epochs", 0),
               "refit_parallel": bool(state.get("refit_parallel", False))}
    if ridge is not None:
        summary["new_item_map"] = {"ridge": round(ridge, 6), "scale": cfg.new_item_scale}
    if affinity is not None:
        summary["new_item_affinity"] = {"fields": [name for name, _ in affinity.fields],
                                        "columns": affinity.width,
                                        "weight": round(affinity.weight, 6)}
    if ranker is not None:
        summary["rank"] = {k: ranker.meta.get(k) for k in ("model", "active", "best_epoch",
                                                           "validation", "note", "rescore")}
    if "warm_start" in state:
        summary["warm_start"] = state["warm_start"]
    with workdir.publish(store, inp.manifest) as out:
        save_weights(out / "model.safetensors", model, {"format": "unirec-two-tower"})
        save_new_item_map(model, out)
        np.save(out / "user_embeddings.npy", users)
        np.save(out / "item_embeddings.npy", items)
        write_bundle(store, out, inp.items["popularity"].numpy())
        if ranker is not None:
            ranker.save(out / RANK_DIR)
        (out / "config.json").write_text(json.dumps({
            "train": cfg.model_dump(mode="json"), "store_config_hash":
            inp.manifest["config_hash"], "summary": summary}, indent=1) + "\n")
        plot_metrics(work / "metrics.jsonl", out / "metrics.png")
    # after the swap: the tables are for inspection; the served model is the folder
    _write_table(store.path, SIDES["user"], users)
    _write_table(store.path, SIDES["item"], items)
    return summary
