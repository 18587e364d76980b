"""Embed the pooled strings and image files once, through the content-addressed cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from unirec.config import Config
from unirec.errors import require_extra
from unirec.features.embed import EmbeddingCache, ImageEmbedder, TextEmbedder
from unirec.store.arrow import from_numpy, strings


def _table(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, Any],
           vectors: np.ndarray) -> None:
    """Create ``name`` from Arrow columns plus a FLOAT[d] ``embedding`` column."""
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    flat = from_numpy(vectors.reshape(-1).astype(np.float32))
    emb = pa.FixedSizeListArray.from_arrays(flat, dim) if dim else pa.ListArray.from_arrays(
        from_numpy(np.zeros(len(vectors) + 1, np.int32)), flat)
    arrow = pa.table({**columns, "embedding": emb})
    con.register("_arrow_in", arrow)
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _arrow_in")
    con.unregister("_arrow_in")


def embed_pools(con: duckdb.DuckDBPyConnection, cfg: Config, cache_root: Path
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Create ``text_embeddings`` / ``image_embeddings``; return report and the matrices.

    Matrices have a zero row 0 (the reserved "missing" index) followed by table rows.
    """
    report: dict[str, Any] = {}
    mats: dict[str, np.ndarray] = {}
    texts = [r[0] for r in con.execute("SELECT DISTINCT text FROM text_pool ORDER BY text")
             .fetchall()]
    vec = np.zeros((0, 0), np.float32)
    started = time.perf_counter()
    if texts:
        require_extra("train", "featurize of text fields (a sentence-transformers model "
                      "embeds them)")
        emb = TextEmbedder(cfg.text.model, cfg.text.device, cfg.text.batch_size)
        vec = emb.embed(texts, EmbeddingCache.for_model(cache_root, "text", emb.model_id))
        report["text"] = {"model": emb.model_id, "strings": len(texts),
                          "embedded": emb.n_encoded, "model_calls": emb.n_model_calls,
                          "seconds": round(time.perf_counter() - started, 3)}
    _table(con, "text_embeddings", {
        "text_index": from_numpy(np.arange(1, len(texts) + 1, dtype=np.int32)),
        "text": strings(texts)}, vec)
    mats["text"] = np.vstack([np.zeros((1, vec.shape[1]), np.float32), vec])

    paths = [r[0] for r in con.execute("SELECT DISTINCT path FROM image_pool ORDER BY path")
             .fetchall()]
    vec, missing = np.zeros((0, 0), np.float32), np.zeros(0, bool)
    started = time.perf_counter()
    if paths:
        require_extra("train", "featurize of image fields (a timm model embeds them)")
        emb = ImageEmbedder(cfg.image.model, cfg.image.checkpoint, cfg.image.device,
                            cfg.image.batch_size)
        vec, missing = emb.embed(paths, EmbeddingCache.for_model(cache_root, "image",
                                                                emb.model_id))
        bad = [p for p, m in zip(paths, missing, strict=True) if m]
        report["image"] = {"model": emb.model_id, "files": len(paths),
                           "embedded": emb.n_encoded, "model_calls": emb.n_model_calls,
                           "unreadable": len(bad), "unreadable_examples": bad[:5],
                           "seconds": round(time.perf_counter() - started, 3)}
    _table(con, "image_embeddings", {
        "image_index": from_numpy(np.arange(1, len(paths) + 1, dtype=np.int32)),
        "path": strings(paths), "missing": from_numpy(np.asarray(missing, bool))}, vec)
    mats["image"] = np.vstack([np.zeros((1, vec.shape[1]), np.float32), vec])
    return report, mats
