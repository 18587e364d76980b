"""Read and validate a folder on Spark with DuckDB's own rules, run per partition.

validate.py states every rule as "the first record (by position) where X"; on one machine
DuckDB answers that over the whole section. Here each partition of records runs the same
code in an in-process DuckDB on its executor, and three passes make the answers global:

1. *structure*: each partition returns its witness records (the first record having each
   key, group field, non-object record or group, repeated key); the driver runs the
   record-level rules (``entity_structure``) on the witnesses alone, which hold the first
   offender of every such rule;
2. *types*: each partition profiles the fields and returns, per field, the JSON types it
   saw with counts and first positions (and the witness record at each); the driver sums
   them, so every partition then decides each field's type from the same global view;
3. *typing*: each partition runs the field rules (``entity_typing``) with the global
   types, on its records plus the witnesses (so a message quoting another partition's
   record reads it), and writes its typed rows as Parquet. A rule that fires reports
   (rule number, position): the smallest over partitions is what DuckDB reports on the
   whole section, the first rule in code order at its first record.

The one difference: rules whose *running* depends on a count (an empty string inside a
categorical list with validate.empty_string_is_missing = false) may be numbered
differently across partitions, so with several distinct problems another one may be named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from unirec.errors import DataError
from unirec.features.profile import Field, Profile, build_profile
from unirec.features.validate import (
    GROUPS,
    INTERACTION_FIELDS,
    Findings,
    entity_structure,
    entity_typing,
    interaction_structure,
    interaction_typing,
)
from unirec.featurize.ingest import not_json
from unirec.featurize.raw import entity_select, stage_select
from unirec.store.layout import SECTIONS, SIDE_OF_SECTION

Types = dict[str, list[list[Any]]]  # field label -> [[json type, count, first pos], ...]


def _src(batches: list[pa.RecordBatch]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = pa.Table.from_batches(batches, schema=pa.schema([("pos", pa.int64()),
                                                             ("rec", pa.string())]))
    con.register("_batch", table)
    con.execute("CREATE TEMP TABLE _in AS SELECT pos, rec FROM _batch")
    con.unregister("_batch")
    return con


def _witness_sql(section: str) -> str:
    """Positions of this partition's witnesses for the record-level rules."""
    top = "(SELECT min(pos) FROM (SELECT pos, unnest(json_keys(rec)) AS k FROM src_{s} " \
          "WHERE json_type(rec) = 'OBJECT') GROUP BY k)"
    parts = ["(SELECT min(pos) FROM src_{s} WHERE json_type(rec) <> 'OBJECT')", top]
    if section != "interactions":
        for g in GROUPS:
            parts.append(f"(SELECT min(pos) FROM src_{{s}} WHERE json_type(rec, '$.{g}') "
                         "NOT IN ('OBJECT', 'NULL'))")
            parts.append(f"(SELECT min(pos) FROM (SELECT pos, unnest(json_keys(rec, '$.{g}')) "
                         f"AS k FROM src_{{s}} WHERE json_type(rec, '$.{g}') = 'OBJECT') "
                         "GROUP BY k)")
    return " UNION ".join(f"SELECT * FROM {p}" for p in parts).format(s=section)


def structure_pass(section: str, file_name: str, batches: list[pa.RecordBatch]
                   ) -> dict[str, Any]:
    """Pass 1 on one partition: witness records, or the first record that is not JSON."""
    con = _src(batches)
    bad = con.execute("SELECT pos, rec FROM _in WHERE NOT json_valid(rec) ORDER BY pos "
                      "LIMIT 1").fetchone()
    if bad is not None:
        exc = not_json(con, file_name, section, int(bad[0]), bad[1])
        return {"error": {"rank": [-1, exc.position], "message": exc.reason,
                          "section": section, "position": exc.position}}
    con.execute(f"CREATE TEMP TABLE src_{section} AS SELECT pos, rec::JSON AS rec FROM _in")
    witnesses = {r[0] for r in con.execute(_witness_sql(section)).fetchall() if r[0] is not None}
    try:
        groups = GROUPS if section != "interactions" else ()
        from unirec.features.validate import duplicate_keys
        duplicate_keys(con, section, groups)
    except DataError as exc:
        witnesses.add(exc.position)
    rows = con.execute("SELECT pos, rec FROM _in WHERE list_contains(?, pos)",
                       [sorted(witnesses)]).fetchall()
    return {"witnesses": [[int(p), r] for p, r in rows]}


def structure_check(section: str, witnesses: dict[int, str]) -> list[tuple[str | None, str]]:
    """The record-level rules over all partitions' witnesses; the profile's fields."""
    con = _witness_con(section, witnesses)
    if section == "interactions":
        interaction_structure(con)
        return [(None, k) for k in INTERACTION_FIELDS]
    return [(None, SIDE_OF_SECTION[section].id), *entity_structure(con, section)]


def _witness_con(section: str, witnesses: dict[int, str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TEMP TABLE src_{section} (pos BIGINT, rec JSON)")
    if witnesses:
        con.executemany(f"INSERT INTO src_{section} VALUES (?, ?)", sorted(witnesses.items()))
    return con


def types_pass(section: str, fields: list[tuple[str | None, str]],
               batches: list[pa.RecordBatch]) -> dict[str, Any]:
    """Pass 2 on one partition: each field's JSON types and element types, with witnesses."""
    con = _src(batches)
    con.execute(f"CREATE TEMP TABLE src_{section} AS SELECT pos, rec::JSON AS rec FROM _in")
    prof = build_profile(con, section, fields)
    types: Types = {}
    elements: Types = {}
    for f in prof.fields:
        types[f.label] = [[t, n, p] for t, (n, p) in Profile.types(prof, f).items()]
        elements[f.label] = [[t, n, p] for t, (n, p) in Profile.element_types(prof, f).items()]
    firsts = {p for d in (types, elements) for rows in d.values() for _, _, p in rows}
    rows = con.execute("SELECT pos, rec FROM _in WHERE list_contains(?, pos)",
                       [sorted(firsts)]).fetchall()
    return {"types": types, "elements": elements, "witnesses": [[int(p), r] for p, r in rows]}


def merge_types(parts: list[Types]) -> Types:
    """Sum counts and keep the first position of each (field, type) over partitions."""
    out: dict[str, dict[Any, list[Any]]] = {}
    for part in parts:
        for label, rows in part.items():
            seen = out.setdefault(label, {})
            for t, n, p in rows:
                if t in seen:
                    seen[t] = [t, seen[t][1] + n, min(seen[t][2], p)]
                else:
                    seen[t] = [t, n, p]
    return {label: sorted(d.values(), key=lambda r: r[2]) for label, d in out.items()}


class PartitionProfile(Profile):
    """A Profile over one partition plus witness records, answering type questions with the
    global view and counting the rules it runs, so the first failing rule can be compared
    across partitions."""

    def __init__(self, base: Profile, types: Types, elements: Types) -> None:
        super().__init__(base.section, base.con, base.fields, base.id_field)
        self._types, self._elements = types, elements
        self.rank = 0

    def types(self, f: Field) -> dict[str | None, tuple[int, int]]:
        return {t: (n, p) for t, n, p in self._types.get(f.label, [])}

    def element_types(self, f: Field) -> dict[str | None, tuple[int, int]]:
        return {t: (n, p) for t, n, p in self._elements.get(f.label, [])}

    def first(self, where: str) -> tuple[int, str | None] | None:
        return super().first(f"({where}) AND pos NOT IN (SELECT pos FROM _remote)")

    def count(self, where: str) -> int:
        return super().count(f"({where}) AND pos NOT IN (SELECT pos FROM _remote)")

    def check(self, f: Field | None, where: str, reason: str) -> None:
        self.rank += 1
        super().check(f, where, reason)

    def fail(self, f: Field | None, pos: int, reason: str) -> DataError:
        self.rank += 1
        return super().fail(f, pos, reason)


def typing_pass(section: str, fields: list[tuple[str | None, str]], types: Types,
                elements: Types, witnesses: dict[int, str], empty_is_missing: bool,
                out: Path, part: int, batches: list[pa.RecordBatch]) -> dict[str, Any]:
    """Pass 3 on one partition: the field rules, then its typed rows as one Parquet file."""
    con = _src(batches)
    con.execute("CREATE TEMP TABLE _remote (pos BIGINT)")
    remote = [(p, r) for p, r in witnesses.items()]
    if remote:
        con.executemany("INSERT INTO _remote SELECT ? WHERE ? NOT IN (SELECT pos FROM _in)",
                        [(p, p) for p, _ in remote])
    con.execute(f"CREATE TEMP TABLE src_{section} AS SELECT pos, rec::JSON AS rec FROM _in")
    if remote:
        con.executemany(f"INSERT INTO src_{section} SELECT ?, ?::JSON WHERE ? IN "
                        "(SELECT pos FROM _remote)", [(p, r, p) for p, r in remote])
    prof = PartitionProfile(build_profile(con, section, fields), types, elements)
    findings = Findings()
    try:
        if section == "interactions":
            select = stage_select(prof, interaction_typing(prof))
        else:
            select = entity_select(entity_typing(prof, findings, empty_is_missing))
    except DataError as exc:
        return {"error": {"rank": [prof.rank, exc.position], "message": exc.reason,
                          "section": exc.section, "position": exc.position,
                          "record_id": exc.record_id, "field": exc.field}}
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"part-{part:05d}.parquet"
    quoted = str(target).replace("'", "''")
    con.execute(f"COPY (SELECT {', '.join(select)} FROM {prof.table} WHERE pos NOT IN "
                f"(SELECT pos FROM _remote) ORDER BY pos) TO '{quoted}' (FORMAT parquet)")
    return {"warnings": findings.warnings,
            "rows": pq.read_metadata(target).num_rows}


def first_error(results: list[dict[str, Any]]) -> None:
    """Raise the error DuckDB would raise on the whole section: lowest (rule, position)."""
    errors = [r["error"] for r in results if "error" in r]
    if not errors:
        return
    e = min(errors, key=lambda e: (e["rank"][0], e["rank"][1] if e["rank"][1] is not None
                                   else -1))
    raise DataError(e["message"], section=e.get("section"), position=e.get("position"),
                    record_id=e.get("record_id"), field=e.get("field"))


def merge_warnings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings summed over partitions, in first-raised order."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        for w in r.get("warnings", []):
            key = (w["section"], w["field"], w["message"])
            if key in merged:
                merged[key]["count"] += w["count"]
            else:
                merged[key] = dict(w)
    return list(merged.values())


def encode(result: dict[str, Any]) -> pa.RecordBatch:
    """A partition's result as one row of JSON text (what mapInArrow returns)."""
    return pa.RecordBatch.from_pydict({"result": [json.dumps(result)]})


__all__ = ["SECTIONS", "structure_pass", "structure_check", "types_pass", "merge_types",
           "typing_pass", "first_error", "merge_warnings", "encode"]
