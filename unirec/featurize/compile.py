"""Execute the plan: fit every op on the training window, then write the feature tables
(``user_features``, ``item_features``, ``vocab``, ``stats``, embeddings) and ``tensors/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from safetensors.numpy import save_file

from unirec.config import Config
from unirec.features.embedding import embed_pools
from unirec.features.ops import OPS, Context, FeatureSpec, Op
from unirec.features.ops.base import column_array
from unirec.store.layout import SIDES
from unirec.store.sql import ident


def create_index_maps(con: duckdb.DuckDBPyConnection) -> None:
    """user_map / item_map: id -> 1..N in input order; 0 is reserved for padding/unknown."""
    for s in SIDES.values():
        table, id_col, map_name, index = s.table, s.id, s.map, s.index
        con.execute(f"CREATE TABLE {map_name} AS SELECT {id_col}, CAST(row_number() OVER "
                    f"(ORDER BY position) AS INTEGER) AS {index} FROM {table} ORDER BY position")


def create_train_window(con: duckdb.DuckDBPyConnection) -> None:
    """Entities with at least one training interaction: what vocabularies and stats see."""
    for s in SIDES.values():
        table, id_col, map_name, index = s.table, s.id, s.map, s.index
        con.execute(f"CREATE TEMP TABLE train_{table} AS SELECT DISTINCT m.{id_col} FROM "
                    f"split_interactions s JOIN {map_name} m USING ({index}) "
                    "WHERE s.split = 'train'")


def fit_ops(con: duckdb.DuckDBPyConnection, specs: list[FeatureSpec], base_dir: Path,
            frozen: dict[str, Any] | None = None) -> list[Op]:
    """Instantiate and fit every op; fitted state lands in vocab/stats and the op.

    With ``frozen`` (``featurize --append``: feature key -> the store's manifest entry,
    the store attached as ``old``), each op extends its previous state instead."""
    con.execute("CREATE TABLE vocab (field VARCHAR, value VARCHAR, index INTEGER, count BIGINT)")
    con.execute("CREATE TABLE stats (field VARCHAR, transform VARCHAR, mean DOUBLE, "
                "std DOUBLE, min DOUBLE, max DOUBLE, missing BIGINT)")
    con.execute("CREATE TEMP TABLE text_pool (text VARCHAR)")
    con.execute("CREATE TEMP TABLE image_pool (path VARCHAR)")
    ctx = Context(con, str(base_dir), "old" if frozen is not None else None)
    ops = [OPS.get(spec.op)(spec) for spec in specs]
    for op in ops:
        if frozen is not None:
            op.extend(ctx, frozen[op.spec.key])
        else:
            op.fit(ctx)
    con.execute("DROP TABLE IF EXISTS v_cur")
    return ops


def build_feature_tables(con: duckdb.DuckDBPyConnection, ops: list[Op], base_dir: Path) -> None:
    """One row per entity (ordered by index) with every op's output columns."""
    ctx = Context(con, str(base_dir))
    for side, s in SIDES.items():
        id_col, map_name, index = s.id, s.map, s.index
        joins, cols = [], []
        for i, op in enumerate(o for o in ops if o.spec.side == side):
            joins.append(f"LEFT JOIN ({op.transform_sql(ctx)}) t{i} ON t{i}.key = m.{id_col}")
            cols += [f't{i}.{ident(o.column)}' for o in op.outputs()]
        select = ", ".join([f"m.{index}", f"m.{id_col}", *cols])
        con.execute(f"CREATE TABLE {side}_features AS SELECT {select} FROM {map_name} m "
                    f"{' '.join(joins)} ORDER BY m.{index}")


def write_tensors(con: duckdb.DuckDBPyConnection, ops: list[Op], mats: dict[str, np.ndarray],
                  popularity: np.ndarray, out: Path) -> dict[str, Any]:
    """tensors/{users,items}.safetensors: row i = entity index i, row 0 = the padding row."""
    out.mkdir(parents=True, exist_ok=True)
    shapes: dict[str, Any] = {}
    for side, s in SIDES.items():
        table, index = s.table, s.index
        arrow = con.sql(f"SELECT * FROM {side}_features ORDER BY {index}").to_arrow_table()
        tensors: dict[str, np.ndarray] = {}
        for op in (o for o in ops if o.spec.side == side):
            for o in op.outputs():
                arr = column_array(arrow, o.column, o.shape, o.dtype)
                tensors[o.column] = np.concatenate([np.zeros((1, *o.shape), o.dtype), arr])
        if side == "item":
            tensors["popularity"] = popularity.astype(np.float32)
        tensors["_index"] = np.arange(arrow.num_rows + 1, dtype=np.int32)
        save_file(tensors, str(out / f"{table}.safetensors"))
        shapes[table] = {k: list(v.shape) for k, v in tensors.items()}
    for kind, mat in mats.items():
        save_file({"embedding": np.ascontiguousarray(mat, np.float32)},
                  str(out / f"{kind}_embeddings.safetensors"))
        shapes[f"{kind}_embeddings"] = {"embedding": list(mat.shape)}
    return shapes


def compile_features(con: duckdb.DuckDBPyConnection, specs: list[FeatureSpec], cfg: Config,
                     base_dir: Path, store: Path, cache_root: Path, popularity: np.ndarray,
                     frozen: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit (or, with ``frozen``, extend: see ``fit_ops``), embed, transform and write
    tensors; returns manifest and report parts."""
    ops = fit_ops(con, specs, base_dir, frozen)
    embed_report, mats = embed_pools(con, cfg, cache_root)
    build_feature_tables(con, ops, base_dir)
    shapes = write_tensors(con, ops, mats, popularity, store / "tensors")
    return {"features": [op.to_json() for op in ops], "tensors": shapes,
            "embeddings": embed_report}
