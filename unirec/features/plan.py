"""Plan: which op compiles each raw field, with which parameters, before any data moves.

Defaults follow the field's group and SQL type (``categorical`` -> categorify, ...);
``features.fields["side.group.field"]`` in the config overrides any of them.
"""

from __future__ import annotations

from typing import Any

import duckdb

from unirec.config import Config
from unirec.errors import ConfigError, DataError
from unirec.features.ops import OPS, FeatureSpec
from unirec.features.validate import GROUPS
from unirec.registry import did_you_mean
from unirec.store.layout import SIDES
from unirec.store.sql import ident

DEFAULT_OP = {"categorical": "categorify", "continuous": "normalize",
              "text": "text_embedding", "image": "image_embedding"}


def raw_fields(con: duckdb.DuckDBPyConnection, side: str) -> list[tuple[str, str, str]]:
    """(group, field, SQL type) of every raw feature field on one side, in table order."""
    table = SIDES[side].table
    present = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()}
    out = []
    for group in GROUPS:
        if group in present:
            rel = con.sql(f"SELECT {group}.* FROM {table} LIMIT 0")
            out += [(group, col, str(t)) for col, t in zip(rel.columns, rel.types, strict=True)]
    return out


def _temporal_op(con: duckdb.DuckDBPyConnection, side: str, field: str, sql_type: str) -> str:
    """Lists of strings are item ids; integer lists are ids only if every element is one."""
    if sql_type == "DOUBLE[]":
        return "float_sequence"
    if sql_type == "VARCHAR[]":
        return "id_sequence"
    table, id_col = SIDES[side].table, SIDES[side].id
    values = (f'SELECT position, {id_col} AS id, unnest(temporal.{ident(field)})::VARCHAR AS v, '
              f'v IN (SELECT item_id::VARCHAR FROM items) AS known FROM {table}')
    n_known, n_unknown = con.execute(
        f"SELECT count(*) FILTER (WHERE known), count(*) FILTER (WHERE NOT known) "
        f"FROM ({values})").fetchone()
    if n_known and n_unknown:
        # one unknown id must not turn every user's id list into numbers: say which it is
        pos, rid, value = con.execute(f"SELECT position, id, v FROM ({values}) WHERE NOT known "
                                      "ORDER BY position LIMIT 1").fetchone()
        raise DataError(
            f"holds {value}, not an item id, while {n_known} other elements are item ids: fix "
            f"the id, or set features.fields['{side}.temporal.{field}'].op to 'float_sequence' "
            "(numbers) or 'id_sequence' (unknown ids become 0)",
            section=f"{side}_data", position=pos, record_id=rid, field=f"temporal.{field}")
    return "id_sequence" if n_known else "float_sequence"


def make_plan(con: duckdb.DuckDBPyConnection, cfg: Config) -> list[FeatureSpec]:
    """Every enabled feature with its op and parameters."""
    fc = cfg.features
    specs: list[FeatureSpec] = []
    known: list[str] = []
    for side in SIDES:
        for group, field, sql_type in raw_fields(con, side):
            key = f"{side}.{group}.{field}"
            known.append(key)
            over = fc.fields.get(key)
            if over is not None and not over.enabled:
                continue
            op = (over.op if over and over.op else None) or DEFAULT_OP.get(group) or \
                _temporal_op(con, side, field, sql_type)
            op_cls = OPS.get(op)
            if sql_type not in op_cls.accepts:
                raise ConfigError(f"features.fields[{key!r}]: op {op!r} takes "
                                  f"{' or '.join(op_cls.accepts)} values, this field is "
                                  f"{sql_type}")
            specs.append(FeatureSpec(side, group, field, op, _params(op, sql_type, fc, over)))
    for key in fc.fields:
        if key not in known:
            raise ConfigError(f"features.fields: no field {key!r} in the data"
                              f"{did_you_mean(key, known)}; fields: {', '.join(known)}")
    return specs


def _params(op: str, sql_type: str, fc: Any, over: Any) -> dict[str, Any]:
    pick = lambda name, default: (getattr(over, name, None) if over else None) or default  # noqa: E731
    if op == "categorify":
        return {"multi": sql_type.endswith("[]"), "min_count": pick("min_count", fc.min_count),
                "max_len": pick("max_len", fc.max_values)}
    if op == "normalize":
        return {"transform": pick("transform", fc.transform)}
    if op == "bucketize":
        return {"buckets": pick("buckets", 10)}
    if op in ("id_sequence", "float_sequence"):
        return {"max_len": pick("max_len", fc.sequence_length)}
    return {}
