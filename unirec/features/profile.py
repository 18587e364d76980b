"""Profile JSON records in bulk: one scan per section, then small aggregates.

``prof_<section>`` holds, for every record, each field's JSON type (``t<i>``) and its
value as text (``v<i>``; lists stay JSON text). Every validation rule and every typed
column is written against that table, so the records are parsed once, in C++.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from unirec.errors import DataError
from unirec.store.sql import ident, literal

INT_TYPES = ("BIGINT", "UBIGINT")
NUM_TYPES = ("BIGINT", "UBIGINT", "DOUBLE")
SCALAR_TYPES = ("VARCHAR", "BIGINT", "UBIGINT", "DOUBLE", "BOOLEAN")

_TYPE_WORDS = {
    "VARCHAR": "a string",
    "BIGINT": "an integer",
    "UBIGINT": "an integer",
    "DOUBLE": "a number",
    "BOOLEAN": "a boolean",
    "ARRAY": "a list",
    "OBJECT": "an object",
    "NULL": "null",
    None: "missing",
}


def type_word(json_type: str | None) -> str:
    """'a string', 'an integer', ... for error messages."""
    return _TYPE_WORDS.get(json_type, str(json_type).lower())


def type_class(json_type: str | None) -> str | None:
    """Coarse class used for 'same type across records': string, number, boolean, ..."""
    if json_type in NUM_TYPES:
        return "number"
    return {"VARCHAR": "string", "BOOLEAN": "boolean", "ARRAY": "list", "OBJECT": "object"}.get(
        json_type or "", None
    )


def quote_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Field:
    """One field of a section: top-level (group None) or inside a feature group."""

    group: str | None
    name: str
    idx: int

    @property
    def path(self) -> str:
        keys = [self.name] if self.group is None else [self.group, self.name]
        return "$." + ".".join(quote_key(k) for k in keys)

    @property
    def label(self) -> str:
        return self.name if self.group is None else f"{self.group}.{self.name}"

    @property
    def t(self) -> str:
        return f"t{self.idx}"

    @property
    def v(self) -> str:
        return f"v{self.idx}"


@dataclass
class Profile:
    """The profiled fields of one section and the id field used to name records."""

    section: str
    con: duckdb.DuckDBPyConnection
    fields: list[Field] = field(default_factory=list)
    id_field: Field | None = None
    # One-pass mode (``deferred`` is a list): ``check`` only collects its rule, and
    # ``run_deferred`` evaluates them all in one aggregate; ``types`` reads ``type_cache``,
    # filled for every field by one GROUP BY (``prefetch_types``). None: each rule queries.
    deferred: list[tuple[Field | None, str, str]] | None = None
    type_cache: dict[int, dict[str | None, tuple[int, int]]] | None = None
    # Typed input (``typed_profile``): field idx -> a column of the view holding that
    # field's signed integers as read, so a typed id need not go through its JSON text.
    native_ints: dict[int, str] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"prof_{self.section}"

    def types(self, f: Field) -> dict[str | None, tuple[int, int]]:
        """JSON type -> (count, first position) over the section."""
        if self.type_cache is not None:
            return dict(self.type_cache.get(f.idx, {}))
        rows = self.con.execute(
            f"SELECT {f.t}, count(*), min(pos) FROM {self.table} GROUP BY 1"
        ).fetchall()
        return {t: (n, first) for t, n, first in rows}

    def element_types(self, f: Field) -> dict[str | None, tuple[int, int]]:
        """For list fields: element JSON type -> (count, first position)."""
        rows = self.con.execute(
            f"SELECT t, count(*), min(pos) FROM (SELECT pos, unnest(json_type({f.v}::JSON, "
            f"'$[*]')) AS t FROM {self.table} WHERE {f.t} = 'ARRAY') GROUP BY 1"
        ).fetchall()
        return {t: (n, first) for t, n, first in rows}

    def first(self, where: str) -> tuple[int, str | None] | None:
        """(position, id) of the first record matching ``where``, or None."""
        id_sql = self.id_field.v if self.id_field else "NULL"
        row = self.con.execute(
            f"SELECT pos, {id_sql} FROM {self.table} WHERE {where} ORDER BY pos LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else None

    def count(self, where: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {self.table} WHERE {where}").fetchone()[0]

    def value(self, f: Field, pos: int) -> str | None:
        row = self.con.execute(f"SELECT {f.v} FROM {self.table} WHERE pos = ?", [pos]).fetchone()
        return row[0] if row else None

    def record_id(self, pos: int) -> str | None:
        return self.value(self.id_field, pos) if self.id_field else None

    def fail(self, f: Field | None, pos: int, reason: str) -> DataError:
        """A DataError located at the record at ``pos``."""
        return DataError(
            reason,
            section=self.section,
            position=pos,
            record_id=self.record_id(pos),
            field=f.label if f else None,
        )

    def check(self, f: Field | None, where: str, reason: str) -> None:
        """Raise ``reason`` at the first record matching ``where``; {value} is filled in."""
        if self.deferred is not None:
            self.deferred.append((f, where, reason))
            return
        hit = self.first(where)
        if hit is not None:
            pos = hit[0]
            shown = self.value(f, pos) if f is not None else None
            raise self.fail(f, pos, reason.format(value=short_value(shown)))


    def prefetch_types(self) -> bool:
        """Every field's JSON types, counts and first positions in one pass (a GROUP BY over
        the type columns: few distinct combinations); False when a record is flagged (see
        ``build_profile``'s ``flag``), i.e. the record-level rules must run one by one."""
        t_cols = [f.t for f in self.fields]
        has_flag = "flag" in {c[0] for c in self.con.execute(
            f"DESCRIBE {self.table}").fetchall()}
        flag = "bool_or(flag)" if has_flag else "false"
        rows = self.con.execute(
            f"SELECT {', '.join(t_cols)}, count(*), min(pos), {flag} FROM {self.table} "
            f"GROUP BY ALL").fetchall()
        cache: dict[int, dict[str | None, tuple[int, int]]] = {f.idx: {} for f in self.fields}
        flagged = False
        for row in rows:
            n, first, flagged_here = row[-3], row[-2], row[-1]
            flagged = flagged or bool(flagged_here)
            for f, t in zip(self.fields, row, strict=False):
                old_n, old_first = cache[f.idx].get(t, (0, first))
                cache[f.idx][t] = (old_n + n, min(old_first, first))
        self.type_cache = cache
        return not flagged

    def run_deferred(self) -> bool:
        """Evaluate every collected check in one scan (``min(pos) FILTER``); True when no
        record breaks any. On False the caller re-runs the rules one by one for the message."""
        checks, self.deferred = self.deferred or [], None
        if not checks:
            return True
        firsts = ", ".join(f"min(pos) FILTER (WHERE {where})" for _, where, _ in checks)
        row = self.con.execute(f"SELECT {firsts} FROM {self.table}").fetchone()
        return all(hit is None for hit in row)


def short_value(value: str | None, limit: int = 40) -> str:
    """A value for an error message: repr'd, cut to ``limit`` characters, or 'null'."""
    if value is None:
        return "null"
    text = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(text)


def build_profile(
    con: duckdb.DuckDBPyConnection, section: str, fields: list[tuple[str | None, str]],
    flag: str | None = None,
) -> Profile:
    """Scan ``src_<section>`` once, extracting every field's type and text value; ``flag``
    (SQL over ``rec`` and ``ts``, the list of the fields' JSON types) is kept as a boolean
    column so record-level rules share the scan."""
    prof = Profile(section, con)
    cols = ["pos"]
    paths = []
    for idx, (group, name) in enumerate(fields):
        f = Field(group, name, idx)
        prof.fields.append(f)
        paths.append(literal(f.path))
        cols += [f"ts[{idx + 1}] AS {f.t}", f"vs[{idx + 1}] AS {f.v}"]
    if flag is not None:
        cols.append(f"({flag}) AS flag")
    rec = ", rec" if flag is not None else ""
    # One path list per call parses each record once for all fields (~2x faster).
    path_list = "[" + ", ".join(paths) + "]"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {prof.table} AS SELECT {', '.join(cols)} FROM "
        f"(SELECT pos, json_type(rec, {path_list}) AS ts, "
        f"json_extract_string(rec, {path_list}) AS vs{rec} FROM src_{section})"
    )
    return prof


# DuckDB column types whose JSON form is known exactly: for each, the JSON type that
# ``json_type(to_json(row), '$.col')`` gives (SQL over the column ``{c}``) and the text that
# ``json_extract_string`` gives. Integers: >= 0 reads back as UBIGINT; doubles (and floats,
# widened) print through to_json's own number writer; dates and timestamps become strings.
_SIGNED = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_AS_TEXT = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")


def _json_form(c: str, sql_type: str) -> tuple[str, str] | None:
    """(JSON type SQL, JSON text SQL) of column ``c`` of ``sql_type``; None if not exact."""
    if sql_type == "VARCHAR":
        return "'VARCHAR'", c
    if sql_type in _SIGNED:
        return f"CASE WHEN {c} < 0 THEN 'BIGINT' ELSE 'UBIGINT' END", f"{c}::VARCHAR"
    if sql_type in _UNSIGNED:
        return "'UBIGINT'", f"{c}::VARCHAR"
    if sql_type in ("DOUBLE", "FLOAT"):
        return "'DOUBLE'", f"to_json({c})::VARCHAR"
    if sql_type == "BOOLEAN":
        return "'BOOLEAN'", f"{c}::VARCHAR"
    if sql_type in _AS_TEXT:
        return "'VARCHAR'", f"{c}::VARCHAR"
    return None


def typed_profile(
    con: duckdb.DuckDBPyConnection, section: str, fields: list[tuple[str | None, str]],
    columns: dict[str, str],
) -> Profile | None:
    """``prof_<section>`` as a view over the typed columns of ``typed_<section>`` (a Parquet
    file: one flat column per top-level field), equal row for row to the table
    ``build_profile`` makes of the same rows as JSON, without writing or parsing any JSON
    (~10x cheaper); a view, because each scan recomputes it for less than a copy costs.

    None when that equality cannot be promised: a column that no field names (the JSON
    rules word that error), a field inside a group, or a column type without an exact
    JSON form. Every record is an object with known, distinct keys, so no ``flag``."""
    if any(group is not None for group, _ in fields) or \
            not set(columns) <= {name for _, name in fields}:
        return None
    prof = Profile(section, con)
    cols = ["pos"]
    for idx, (group, name) in enumerate(fields):
        f = Field(group, name, idx)
        prof.fields.append(f)
        if name not in columns:
            cols += [f"NULL::VARCHAR AS {f.t}", f"NULL::VARCHAR AS {f.v}"]
            continue
        form = _json_form(ident(name), columns[name])
        if form is None:
            return None
        c = ident(name)
        cols += [f"CASE WHEN {c} IS NULL THEN 'NULL' ELSE {form[0]} END AS {f.t}",
                 f"{form[1]} AS {f.v}"]
        if columns[name] in _SIGNED:
            prof.native_ints[idx] = f"n{idx}"
            cols.append(f"{c} AS n{idx}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {prof.table} AS SELECT {', '.join(cols)} "
                f"FROM typed_{section}")
    return prof
