"""Compile new user/item records (input format) into feature rows with the store's fitted state.

A record of a user or item the store has never seen must become exactly the feature rows
``featurize`` would have written for it, or the towers see something they were not trained
on. So nothing here re-implements an op: the records go into a tiny in-memory DuckDB table
shaped like the store's raw ``users``/``items`` table (same struct fields and types, through
the same validation rules as featurize), and every op's own ``transform_sql`` runs against
copies of the store's fitted state (``vocab``, ``item_map``, the text/image tables, the
statistics in the manifest). Nothing is refitted: an unseen categorical value is index 0
(OOV), as in featurize.

Text and image fields need vectors for strings/files the store never embedded; the caller
supplies them (``embed_text`` / ``embed_image``), so this module needs no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from unirec.errors import DataError, QueryError
from unirec.features.ops import Context, Op
from unirec.features.ops.base import column_array
from unirec.features.plan import raw_fields
from unirec.features.profile import build_profile
from unirec.features.validate import GROUPS, Findings, field_column
from unirec.registry import did_you_mean
from unirec.store import DB_FILE, Store
from unirec.store.layout import SIDES
from unirec.store.sql import ident, literal

# record type (from the validation rules) -> store type conversions that keep the meaning
_WIDEN = {("BIGINT[]", "DOUBLE[]"), ("BIGINT[]", "VARCHAR[]")}

EmbedText = Callable[[list[str]], np.ndarray]  # strings -> (n, d) float32
EmbedImage = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # paths -> vectors, missing


@dataclass
class Compiled:
    """Feature rows of n records, and vectors for text/image rows beyond the store's tables."""

    rows: dict[str, np.ndarray]  # tensor column -> (n, *shape)
    new_text: np.ndarray | None  # appended after the store's text table rows
    new_image: np.ndarray | None


class RecordCompiler:
    """The store's fitted state in memory; compiles records of either side on demand."""

    def __init__(self, store: str | Path) -> None:
        st = Store(store)
        manifest = st.manifest
        self.empty_is_missing = manifest["config"]["validate"]["empty_string_is_missing"]
        src = Path(manifest["input"]["path"])
        self.base_dir = str(src if manifest["input"]["form"] == "folder" else src.parent)
        self.ops = {side: [Op.from_json(f) for f in manifest["features"]
                           if f["side"] == side] for side in SIDES}
        self.n_rows = {k: manifest["tensors"][f"{k}_embeddings"]["embedding"][0]
                       for k in ("text", "image")}
        self.con = duckdb.connect()
        self.con.execute(f"ATTACH {literal(st.path / DB_FILE)} AS st (READ_ONLY)")
        try:
            self.fields = {side: self._raw_fields(side) for side in SIDES}
            # what the ops' SQL reads; the text/image tables under other names, since each
            # call makes its own (the store's rows plus new ones) for the ops to join
            for table, name, cols in (("vocab", "vocab", "*"), ("item_map", "item_map", "*"),
                                      ("text_embeddings", "store_text", "text_index, text"),
                                      ("image_embeddings", "store_image",
                                       "image_index, path, missing")):
                self.con.execute(f"CREATE TABLE {name} AS SELECT {cols} FROM st.{table}")
        finally:
            self.con.execute("DETACH st")

    def _raw_fields(self, side: str) -> dict[str, dict[str, str]]:
        """group -> field -> SQL type of the store's raw table (what a record may hold)."""
        self.con.execute("USE st")
        try:
            out: dict[str, dict[str, str]] = {}
            for group, field, sql_type in raw_fields(self.con, side):
                out.setdefault(group, {})[field] = sql_type
            return out
        finally:
            self.con.execute("USE memory")

    # ---- checking ------------------------------------------------------------------
    def check(self, side: str, records: list[dict[str, Any]]) -> None:
        """Structure of each record: an object, known keys, groups of known fields."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise QueryError(f"{side} records must be JSON objects (a list of them for many)")
        id_name = SIDES[side].id
        allowed = (id_name, *GROUPS, *(("history",) if side == "user" else ()))
        for pos, rec in enumerate(records):
            where = f"{side} record {pos}"
            for key, value in rec.items():
                if key not in allowed:
                    raise DataError(f"unknown key {key!r}{did_you_mean(key, allowed)}; {side} "
                                    f"records take {', '.join(allowed)}", field=where)
                if key == id_name and (isinstance(value, bool) or
                                       not isinstance(value, (int, str))):
                    raise DataError("must be an integer or a string",
                                    field=f"{where}: {id_name}")
                if key in GROUPS and value is not None:
                    self._check_group(side, where, key, value)

    def _check_group(self, side: str, where: str, group: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise DataError(f"must be an object of field -> value, got {_word(value)}",
                            field=f"{where}: {group}")
        known = self.fields[side].get(group, {})
        for name in value:
            if name not in known:
                listed = ", ".join(known) or "none"
                raise DataError(f"unknown field{did_you_mean(name, list(known))}; this "
                                f"store's {side} {group} fields: {listed}",
                                field=f"{where}: {group}.{name}")

    # ---- compiling -----------------------------------------------------------------
    def compile(self, side: str, records: list[dict[str, Any]], embed_text: EmbedText,
                embed_image: EmbedImage) -> Compiled:
        """Feature rows for ``records`` (checked first), as ``featurize`` would compile them."""
        self.check(side, records)
        cur = self.con.cursor()  # temp tables are private to it: concurrent calls are safe
        try:
            self._raw_table(cur, side, records)
            ctx = Context(cur, self.base_dir)
            new_text = self._pool(cur, ctx, side, "text", embed_text)
            new_image = self._pool(cur, ctx, side, "image", embed_image)
            return Compiled(self._rows(cur, ctx, side), new_text, new_image)
        finally:
            cur.close()

    def _raw_table(self, cur: duckdb.DuckDBPyConnection, side: str,
                   records: list[dict[str, Any]]) -> None:
        """Temp ``users``/``items`` keyed by record position, typed like the store's table."""
        section = SIDES[side].section
        table, id_col = SIDES[side].table, SIDES[side].id
        texts = [json.dumps({g: r.get(g) for g in GROUPS}) for r in records]
        cur.execute(f"CREATE TEMP TABLE src_{section} AS SELECT generate_subscripts($1::VARCHAR"
                    "[], 1) - 1 AS pos, unnest($1::VARCHAR[])::JSON AS rec", [texts])
        given = {(g, f) for r in records for g in GROUPS if isinstance(r.get(g), dict)
                 for f, v in r[g].items() if v is not None}
        # only fields some record gives are profiled and checked: each rule costs queries
        structs = {g: {f: f"NULL::{t}" for f, t in fields.items()}
                   for g, fields in self.fields[side].items()}
        prof = build_profile(cur, section, [(g, f) for g in structs for f in structs[g]
                                            if (g, f) in given])
        for f in prof.fields:
            store_type = self.fields[side][f.group][f.name]
            try:
                col = field_column(prof, f, Findings(), self.empty_is_missing)
            except DataError as err:
                raise DataError(err.reason, field=f"{side} record {err.position}: "
                                f"{f.group}.{f.name}") from None
            expr = self._as_store_type(prof, f, col.expr, col.sql_type, store_type, side)
            structs[f.group][f.name] = expr
        select = [f"pos AS {id_col}", "pos AS position"]
        select += [f"struct_pack({', '.join(f'{ident(f)} := {e}' for f, e in m.items())}) "
                   f"AS {g}" for g, m in structs.items()]
        cur.execute(f"CREATE TEMP TABLE {table} AS SELECT {', '.join(select)} "
                    f"FROM {prof.table} ORDER BY pos")

    @staticmethod
    def _as_store_type(prof: Any, f: Any, expr: str, got: str, want: str, side: str) -> str:
        """``expr`` (of type ``got``, from these records) as the store's type ``want``."""
        given = prof.first(f"{f.t} IS NOT NULL AND {f.t} <> 'NULL'")
        if given is None:
            return f"NULL::{want}"
        if got == want or (got, want) in _WIDEN:
            return f"CAST({expr} AS {want})"
        if (got, want) == ("VARCHAR", "VARCHAR[]"):  # one value of a multi-valued field
            return f"CASE WHEN ({expr}) IS NULL THEN NULL ELSE [({expr})] END"
        words = {"VARCHAR": "one value (not a list)", "VARCHAR[]": "a list of ids",
                 "BIGINT[]": "a list of integer ids", "DOUBLE[]": "a list of numbers"}
        raise DataError(f"must be {words.get(want, want)}, as in the store's data",
                        field=f"{side} record {given[0]}: {f.group}.{f.name}")

    def _pool(self, cur: duckdb.DuckDBPyConnection, ctx: Context, side: str, kind: str,
              embed: Callable[[list[str]], Any]) -> np.ndarray | None:
        """Temp ``{kind}_embeddings`` for these records: strings/files the store embedded keep
        their row; new ones are embedded by ``embed`` and numbered after the store's rows."""
        ops = [op for op in self.ops[side] if op.name == f"{kind}_embedding"]
        if not ops:
            return None
        values = " UNION ".join(f"SELECT value FROM ({ctx.value_sql(op.spec)})" if kind == "text"
                                else f"SELECT path AS value FROM ({op.resolved_sql(ctx)})"
                                for op in ops)
        key, flag = ("text", ", false") if kind == "text" else ("path", ", s.missing")
        rows = cur.execute(f"SELECT DISTINCT v.value, s.{kind}_index{flag} FROM ({values}) v "
                           f"LEFT JOIN store_{kind} s ON v.value = s.{key} "
                           "WHERE v.value IS NOT NULL ORDER BY v.value").fetchall()
        known = [r for r in rows if r[1] is not None]
        new = [r[0] for r in rows if r[1] is None]
        vectors, missing = None, np.zeros(len(new), bool)
        if new:
            got = embed(new)
            vectors, missing = got if kind == "image" else (got, missing)
        base = self.n_rows[kind]
        cur.execute(f"CREATE TEMP TABLE {kind}_embeddings AS SELECT unnest($1::INTEGER[]) AS "
                    f"{kind}_index, unnest($2::VARCHAR[]) AS {key}, unnest($3::BOOLEAN[]) AS "
                    "missing", [[r[1] for r in known] + list(range(base, base + len(new))),
                                [r[0] for r in known] + new,
                                [bool(r[2]) for r in known] + [bool(m) for m in missing]])
        return vectors

    def _rows(self, cur: duckdb.DuckDBPyConnection, ctx: Context, side: str
              ) -> dict[str, np.ndarray]:
        """Every op's columns, one row per record in order, as ``build_feature_tables``."""
        id_col = SIDES[side].id
        joins, cols, outputs = [], [], []
        for i, op in enumerate(self.ops[side]):
            joins.append(f"LEFT JOIN ({op.transform_sql(ctx)}) t{i} ON t{i}.key = m.{id_col}")
            cols += [f't{i}.{ident(o.column)}' for o in op.outputs()]
            outputs += op.outputs()
        if not outputs:
            return {}
        arrow = cur.sql(f"SELECT {', '.join(cols)} FROM {SIDES[side].table} m {' '.join(joins)} "
                        f"ORDER BY m.{id_col}").to_arrow_table()
        return {o.column: column_array(arrow, o.column, o.shape, o.dtype) for o in outputs}


def _word(value: Any) -> str:
    """'a list', 'a string', ... as featurize's messages say it."""
    for kind, word in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
                       (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return word
    return type(value).__name__

