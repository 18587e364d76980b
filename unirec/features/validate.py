"""Validate records in bulk and say exactly what is wrong, where.

Each rule is one SQL aggregate over ``prof_<section>`` (see profile.py): the first
offending record becomes a one-line ``DataError`` naming section, position, id and field.
Rules return the SQL that turns a valid field into its typed column, so checking and
typing cannot disagree. Soft problems are counted in ``Findings``, never dropped silently.

Featurize runs the rules in one pass (``in_one_pass``): the record rules ride on the profile
scan as a flag, every field's types come from one GROUP BY, and every check is one
``min(pos) FILTER`` of one aggregate. Only when something fails do the rules run again one
by one, in order, so the first failure is located and worded exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb

from unirec.errors import DataError
from unirec.features.profile import (
    INT_TYPES,
    NUM_TYPES,
    SCALAR_TYPES,
    Field,
    Profile,
    build_profile,
    short_value,
    type_class,
    type_word,
    typed_profile,
)
from unirec.registry import did_you_mean
from unirec.store.duckdb_errors import ERRORS
from unirec.store.layout import SIDE_OF_SECTION

T = TypeVar("T")

GROUPS = ("image", "text", "categorical", "continuous", "temporal")
INTERACTION_FIELDS = ("user_id", "item_id", "interaction_type", "timestamp", "weight", "rating")


@dataclass
class Findings:
    """Soft problems (warnings) and dropped rows, per section, for report.json."""

    warnings: list[dict] = field(default_factory=list)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    def warn(self, section: str, fld: str, count: int, message: str) -> None:
        if count:
            self.warnings.append(
                {"section": section, "field": fld, "count": count, "message": message}
            )

    def drop(self, section: str, reason: str, count: int) -> None:
        if count:
            sec = self.dropped.setdefault(section, {})
            sec[reason] = sec.get(reason, 0) + count


@dataclass
class Column:
    """A typed output column: ``expr`` over prof's t<i>/v<i> columns, of ``sql_type``."""

    name: str
    expr: str
    sql_type: str
    group: str | None = None


# ---------------------------------------------------------------- records and keys
def record_keys(con: duckdb.DuckDBPyConnection, section: str, allowed: tuple[str, ...]) -> None:
    """Every record is an object and every key is one the format knows."""
    row = con.execute(
        f"SELECT pos, coalesce(json_type(rec), 'NULL') FROM src_{section} "
        "WHERE rec IS NULL OR json_type(rec) <> 'OBJECT' ORDER BY pos LIMIT 1"
    ).fetchone()
    if row:
        raise DataError(
            f"each record must be an object, got {type_word(row[1])}",
            section=section, position=row[0],
        )
    rows = con.execute(
        f"SELECT k, min(pos) FROM (SELECT pos, unnest(json_keys(rec)) AS k FROM src_{section}) "
        "GROUP BY k ORDER BY 2"
    ).fetchall()
    for key, pos in rows:
        if key not in allowed:
            raise DataError(
                f"unknown key {key!r}{did_you_mean(key, allowed)}; records here take "
                f"{', '.join(allowed)}",
                section=section, position=pos,
            )


def group_fields(con: duckdb.DuckDBPyConnection, section: str) -> list[tuple[str, str]]:
    """(group, field) pairs present in any record, in first-seen order.

    Two scans for all groups (the first record whose group is not an object, per group; the
    keys of every group with their first position), then the rules in group order."""
    paths = "[" + ", ".join(f"'$.{g}'" for g in GROUPS) + "]"
    bad_sql = ", ".join(
        f"min(pos) FILTER (WHERE gt[{i + 1}] NOT IN ('OBJECT', 'NULL')), "
        f"arg_min(gt[{i + 1}], pos) FILTER (WHERE gt[{i + 1}] NOT IN ('OBJECT', 'NULL'))"
        for i in range(len(GROUPS)))
    bad = con.execute(f"SELECT {bad_sql} FROM (SELECT pos, json_type(rec, {paths}) AS gt "
                      f"FROM src_{section})").fetchone()
    keys: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(GROUPS))}
    for gi, key, pos in con.execute(
        f"SELECT gi, k, min(pos) FROM (SELECT pos, gi, unnest(ks) AS k FROM (SELECT pos, "
        f"unnest(range({len(GROUPS)})) AS gi, unnest(json_keys(rec, {paths})) AS ks "
        f"FROM src_{section})) GROUP BY 1, 2"
    ).fetchall():
        keys[gi].append((pos, key))
    out: list[tuple[str, str]] = []
    for i, group in enumerate(GROUPS):
        if bad[2 * i] is not None:
            raise DataError(
                f"must be an object of field -> value, got {type_word(bad[2 * i + 1])}",
                section=section, position=bad[2 * i], field=group,
            )
        for pos, key in sorted(keys[i]):
            if not key.strip():
                raise DataError("field names must not be empty", section=section,
                                position=pos, field=group)
            out.append((group, key))
    return out


# ---------------------------------------------------------------- per-kind rules
def _bad_types(p: Profile, f: Field, allowed: tuple[str, ...], want: str) -> None:
    for t, (_, pos) in sorted(p.types(f).items(), key=lambda kv: kv[1][1]):
        if t is not None and t != "NULL" and t not in allowed:
            raise p.fail(f, pos, f"must be {want}, got {type_word(t)} ({_val(p, f, pos)})")


def _val(p: Profile, f: Field, pos: int) -> str:
    return short_value(p.value(f, pos))


def _same_class(p: Profile, f: Field, types: dict) -> None:
    """'a field whose type differs across records' is an error, naming both records."""
    seen: dict[str, int] = {}
    for t, (_, pos) in sorted(types.items(), key=lambda kv: kv[1][1]):
        cls = type_class(t)
        if cls is None:
            continue
        if seen and cls not in seen:
            other_cls, other_pos = next(iter(seen.items()))
            if other_pos == pos:
                reason = f"mixes {other_cls}s and {cls}s; use one type for this field"
            else:
                article = "an" if other_cls[0] in "aeiou" else "a"
                reason = (f"is {type_word(t)} here but {article} {other_cls} in "
                          f"{p.section}[{other_pos}]; use one type for this field")
            raise p.fail(f, pos, reason)
        seen.setdefault(cls, pos)


def _finite(p: Profile, f: Field, expr: str) -> None:
    p.check(f, f"isnan({expr}) OR isinf({expr})",
            "is {value}: NaN and infinity are not allowed (use null for a missing value)")


def id_column(p: Profile, f: Field, *, one_type: bool) -> Column:
    """Ids are integers or non-empty strings; within a section one type (when asked)."""
    types = p.types(f)
    p.check(f, f"{f.t} IS NULL OR {f.t} = 'NULL'", "is missing: every record needs one")
    _bad_types(p, f, (*INT_TYPES, "VARCHAR"), "an integer or a string")
    if "VARCHAR" in types:  # the string rules cannot fire where no id is a string
        p.check(f, f"{f.t} = 'VARCHAR' AND trim({f.v}) = ''", "is empty")
        untrimmed_ids(p, f)
    if one_type:
        _same_class(p, f, types)
    all_int = all(t in INT_TYPES for t in types)
    if all_int:
        # the same integers, without a round trip through text when the input typed them
        ints = p.native_ints.get(f.idx, f.v)
        p.check(f, f"TRY_CAST({ints} AS BIGINT) IS NULL",
                "is {value}: integer ids must fit 64 bits")
        return Column(f.name, f"CAST({ints} AS BIGINT)", "BIGINT")
    return Column(f.name, f.v, "VARCHAR")


def categorical_column(p: Profile, f: Field, findings: Findings, empty_is_missing: bool) -> Column:
    """Strings, numbers or booleans, or lists of them (multi-valued); one class throughout."""
    types = p.types(f)
    _bad_types(p, f, (*SCALAR_TYPES, "ARRAY"), "a string, number, boolean or a list of them")
    scalar = {t: v for t, v in types.items() if t in SCALAR_TYPES}
    if "ARRAY" not in types:
        _same_class(p, f, scalar)
        return Column(f.name, _empty_to_null(p, f, findings, empty_is_missing), "VARCHAR", f.group)
    elements = p.element_types(f)
    for t, (_, pos) in elements.items():
        if t not in SCALAR_TYPES:
            raise p.fail(f, pos, f"list elements must be strings, numbers or booleans, "
                                 f"got {type_word(t)}")
    _same_class(p, f, {**scalar, **elements})
    n_empty = p.count(f"{f.t} = 'ARRAY' AND list_contains(CAST({f.v}::JSON AS VARCHAR[]), '')")
    if n_empty and not empty_is_missing:
        p.check(f, f"{f.t} = 'ARRAY' AND list_contains(CAST({f.v}::JSON AS VARCHAR[]), '')",
                "holds an empty string ('') in {value}")
    findings.warn(p.section, f.label, n_empty, "empty strings in lists treated as missing")
    scalar_expr = _empty_to_null(p, f, findings, empty_is_missing)
    expr = (
        f"CASE WHEN {f.t} = 'ARRAY' THEN list_filter(CAST({f.v}::JSON AS VARCHAR[]), "
        f"lambda x: x <> '') WHEN {scalar_expr} IS NULL THEN NULL ELSE [{scalar_expr}] END"
    )
    return Column(f.name, expr, "VARCHAR[]", f.group)


def _empty_to_null(p: Profile, f: Field, findings: Findings, empty_is_missing: bool) -> str:
    where = f"{f.t} = 'VARCHAR' AND {f.v} = ''"
    if not empty_is_missing:
        p.check(f, where, "is an empty string (use null for a missing value)")
    findings.warn(p.section, f.label, p.count(where), "empty strings treated as missing")
    return f"CASE WHEN {f.t} = 'ARRAY' THEN NULL ELSE NULLIF({f.v}, '') END"


def continuous_column(p: Profile, f: Field) -> Column:
    _bad_types(p, f, NUM_TYPES, "a number")
    _finite(p, f, f"TRY_CAST({f.v} AS DOUBLE)")
    huge_numbers(p, f)
    return Column(f.name, f"CAST({f.v} AS DOUBLE)", "DOUBLE", f.group)


def text_column(p: Profile, f: Field) -> Column:
    _bad_types(p, f, ("VARCHAR",), "a string")
    return Column(f.name, f.v, "VARCHAR", f.group)


def image_column(p: Profile, f: Field) -> Column:
    _bad_types(p, f, ("VARCHAR",), "a path (a string)")
    p.check(f, f"{f.t} = 'VARCHAR' AND trim({f.v}) = ''",
            "is an empty path (use null for a record without an image)")
    return Column(f.name, f.v, "VARCHAR", f.group)


def temporal_column(p: Profile, f: Field) -> Column:
    """Lists of item ids (strings or integers) or of numbers; elements of one class."""
    _bad_types(p, f, ("ARRAY",), "a list of ids or numbers")
    elements = p.element_types(f)
    for t, (_, pos) in elements.items():
        if t not in (*NUM_TYPES, "VARCHAR"):
            raise p.fail(f, pos, f"list elements must be ids or numbers, got {type_word(t)}")
    _same_class(p, f, elements)
    if "VARCHAR" in elements:
        return Column(f.name, f"CAST({f.v}::JSON AS VARCHAR[])", "VARCHAR[]", f.group)
    sql_type = "DOUBLE[]" if "DOUBLE" in elements else "BIGINT[]"
    p.check(f, f"{f.t} = 'ARRAY' AND list_bool_or(list_transform(CAST({f.v}::JSON AS DOUBLE[]), "
               "lambda x: isnan(x) OR isinf(x)))",
            "holds NaN or infinity in {value}")
    return Column(f.name, f"CAST({f.v}::JSON AS {sql_type})", sql_type, f.group)


KIND_RULES = {
    "categorical": categorical_column,
    "continuous": continuous_column,
    "text": text_column,
    "image": image_column,
    "temporal": temporal_column,
}


def field_column(p: Profile, f: Field, findings: Findings, empty_is_missing: bool) -> Column:
    """The typed column of one user/item field, by its group's rule (``KIND_RULES``): what
    featurize applies to a whole section and serving to a new record."""
    if f.group == "categorical":
        return categorical_column(p, f, findings, empty_is_missing)
    return KIND_RULES[f.group](p, f)


# ---------------------------------------------------------------- sections
def entity_columns(
    con: duckdb.DuckDBPyConnection, section: str, findings: Findings, empty_is_missing: bool
) -> tuple[Profile, list[Column]]:
    """Validate user_data or item_data; returns the profile and its typed columns."""
    id_name = SIDE_OF_SECTION[section].id
    allowed = (id_name, *GROUPS)
    try:
        pairs = group_fields(con, section)
        colliding_fields(con, section, pairs)
    except DataError:  # the record rules come first in rule order
        record_keys(con, section, allowed)
        duplicate_keys(con, section, GROUPS)
        raise
    prof, clean = _profile(con, section, [(None, id_name), *pairs], allowed, GROUPS)

    def rules(found: Findings) -> list[Column]:
        return entity_typing(prof, found, empty_is_missing)

    cols = in_one_pass(prof, rules, findings) if clean else None
    if cols is None:
        prof.type_cache = None
        cols = rules(findings)
    return prof, cols


def entity_structure(con: duckdb.DuckDBPyConnection, section: str) -> list[tuple[str, str]]:
    """The record-level rules (objects, keys, groups, names); returns the (group, field)
    pairs in first-seen order. Needs only each rule's first offending record, so the Spark
    engine runs it on a few witness records per partition (featurize/spark/ingest.py)."""
    id_name = SIDE_OF_SECTION[section].id
    record_keys(con, section, (id_name, *GROUPS))
    duplicate_keys(con, section, GROUPS)
    pairs = group_fields(con, section)
    colliding_fields(con, section, pairs)
    return pairs


def entity_typing(prof: Profile, findings: Findings, empty_is_missing: bool) -> list[Column]:
    """The field rules and typed columns of a profiled user_data / item_data."""
    prof.id_field = prof.fields[0]
    cols = [id_column(prof, prof.id_field, one_type=True)]
    cols += [field_column(prof, f, findings, empty_is_missing) for f in prof.fields[1:]]
    return cols


def interaction_columns(con: duckdb.DuckDBPyConnection) -> tuple[Profile, dict[str, Column]]:
    """Validate the interactions' fields (ids against entities happen in raw.py).

    Its record-level rules (objects, known keys, no key twice) ride on the profile's one scan
    as a flag, and every field rule on one more; only when something is wrong do the rules
    run one by one, in their order, for the exact message."""
    prof, clean = _profile(con, "interactions", [(None, k) for k in INTERACTION_FIELDS],
                           INTERACTION_FIELDS, ())
    cols = in_one_pass(prof, lambda _: interaction_typing(prof), Findings()) if clean else None
    if cols is None:
        prof.type_cache = None
        cols = interaction_typing(prof)
    return prof, cols


def typed_interaction_columns(con: duckdb.DuckDBPyConnection, columns: dict[str, str]
                              ) -> tuple[Profile, dict[str, Column]] | None:
    """``interaction_columns`` for interactions read from typed columns (Parquet, see
    ``typed_profile``): the same profile without JSON, the same rules in one pass. None
    when the profile cannot be built exactly, the file cannot be decoded, or any rule
    fails: the caller then runs ``interaction_columns`` on the rows as JSON, which finds
    and words the first problem exactly as for any other input."""
    try:
        prof = typed_profile(con, "interactions", [(None, k) for k in INTERACTION_FIELDS],
                             columns)
        cols = None
        if prof is not None and prof.prefetch_types():
            cols = in_one_pass(prof, lambda _: interaction_typing(prof), Findings())
    except ERRORS:
        cols = None
    if cols is None:
        con.execute("DROP VIEW IF EXISTS prof_interactions")
        return None
    return prof, cols


def _profile(con: duckdb.DuckDBPyConnection, section: str, names: list[tuple[str | None, str]],
             allowed: tuple[str, ...], groups: tuple[str, ...]) -> tuple[Profile, bool]:
    """The section's profile, and whether its one pass may go ahead: when a record is flagged
    (or the flagged scan fails), ``record_keys`` and ``duplicate_keys`` run first, in order."""
    try:
        prof = build_profile(con, section, names, flag=record_problem_sql(names, groups))
        if prof.prefetch_types():
            return prof, True
    except ERRORS:
        prof = None
    record_keys(con, section, allowed)
    duplicate_keys(con, section, groups)
    return prof or build_profile(con, section, names), False


def interaction_structure(con: duckdb.DuckDBPyConnection) -> None:
    """The record-level rules of interactions (see ``entity_structure``)."""
    record_keys(con, "interactions", INTERACTION_FIELDS)
    duplicate_keys(con, "interactions", ())


def interaction_typing(prof: Profile) -> dict[str, Column]:
    """The field rules and typed columns of profiled interactions."""
    f = {x.name: x for x in prof.fields}
    cols = {
        "user_id": id_column(prof, f["user_id"], one_type=False),
        "item_id": id_column(prof, f["item_id"], one_type=False),
    }
    it = f["interaction_type"]
    _bad_types(prof, it, ("VARCHAR",), "a string")
    prof.check(it, f"{it.t} = 'VARCHAR' AND trim({it.v}) = ''",
               "is empty (leave it out, or name the type)")
    cols["interaction_type"] = Column("interaction_type", it.v, "VARCHAR")
    for name in ("weight", "rating"):
        w = f[name]
        _bad_types(prof, w, NUM_TYPES, "a number")
        _finite(prof, w, f"TRY_CAST({w.v} AS DOUBLE)")
        cols[name] = Column(name, f"CAST({w.v} AS DOUBLE)", "DOUBLE")
    prof.check(f["weight"], f"TRY_CAST({f['weight'].v} AS DOUBLE) < 0",
               "is {value}: weights must be zero or positive")
    ts = f["timestamp"]
    _bad_types(prof, ts, (*NUM_TYPES, "VARCHAR"), "an ISO-8601 string or unix seconds")
    utc = prof.con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    cols["timestamp"] = Column("timestamp", timestamp_expr(ts, utc), "TIMESTAMP")
    return cols


def in_one_pass(prof: Profile, rules: Callable[[Findings], T], findings: Findings) -> T | None:
    """Run ``rules`` with their checks collected and evaluated in one scan of the profile.

    None when any rule fails (or the batch cannot even be evaluated on this data): the
    caller then runs ``rules`` one by one, which raises the first failure in rule order with
    the located message. Warnings reach ``findings`` only from a pass that succeeded."""
    found = Findings()
    prof.deferred = []
    try:
        out = rules(found)
        clean = prof.run_deferred()
    except (DataError, duckdb.Error):
        clean = False
    finally:
        prof.deferred = None
    if not clean:
        prof.type_cache = None
        return None
    findings.warnings += found.warnings
    for section, reasons in found.dropped.items():
        for reason, n in reasons.items():
            findings.drop(section, reason, n)
    return out


def timestamp_expr(ts: Field, utc: bool = False) -> str:
    """ISO-8601 strings (offsets honoured, naive = UTC) or unix seconds -> UTC TIMESTAMP.

    ``utc``: the session's TimeZone is UTC (featurize sets it), so a plain date-time without
    offset or zone name (``PLAIN_ISO``) reads the same through the ~5x cheaper TIMESTAMP
    cast as through TIMESTAMPTZ (ICU) and back; anything else still takes TIMESTAMPTZ."""
    iso = f"{ts.t} = 'VARCHAR' AND {ISO_DATE.format(v=ts.v)}"
    zoned = f"WHEN {iso} THEN TRY_CAST({ts.v} AS TIMESTAMPTZ)::TIMESTAMP "
    plain = (f"WHEN {ts.t} = 'VARCHAR' AND {PLAIN_ISO.format(v=ts.v)} "
             f"THEN TRY_CAST({ts.v} AS TIMESTAMP) " if utc else "")
    return (
        f"CASE {plain}{zoned}"
        f"WHEN {ts.t} IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND abs(TRY_CAST({ts.v} AS DOUBLE)) "
        f"< 1e11 THEN to_timestamp(TRY_CAST({ts.v} AS DOUBLE))::TIMESTAMP END"
    )


def bad_timestamp_reason(prof: Profile, ts: Field, pos: int) -> str:
    """Why the timestamp at ``pos`` was rejected, with the fix."""
    t = prof.con.execute(f"SELECT {ts.t} FROM {prof.table} WHERE pos = ?", [pos]).fetchone()[0]
    value = _val(prof, ts, pos)
    if t in NUM_TYPES:
        return (f"is {value}, beyond year 5000: unix timestamps are in seconds "
                "(divide milliseconds by 1000)")
    if t is None or t == "NULL":
        return "is missing while other interactions have one: give every interaction a time"
    return f"is {value}, which is not ISO-8601 (e.g. '2024-01-15T10:30:00Z') or unix seconds"


# ---------------------------------------------------------------- integrity checks
# Inputs that other readers would take differently, or that would silently change what a
# feature means. Each is one bulk query (or a pass over field names, never over records).

# DuckDB casts 'infinity', '-infinity', 'epoch', 'now' and friends to timestamps; an
# ISO-8601 date starts with a four-digit year, so only such strings are parsed at all.
ISO_DATE = "regexp_matches({v}, '^[0-9]{{4}}-[0-9]{{2}}')"
# A date, or a date and time, with no offset and no zone name (see ``timestamp_expr``).
PLAIN_ISO = ("regexp_full_match({v}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}"
             "([T ][0-9]{{2}}:[0-9]{{2}}(:[0-9]{{2}}(\\.[0-9]{{1,6}})?)?)?')")
# Suffixes the ops add to a field's name for their extra columns (normalize/image: .missing,
# categorify/sequences: .length): a field named like one would be silently shadowed.
DERIVED_SUFFIXES = (".missing", ".length")
MAX_ABS_CONTINUOUS = 1e30  # float32 training and squared statistics stay finite
MAX_FIELDS = 256  # per section: one join per field compiles them (256 measured to work)


def _duplicate_keys_sql(groups: tuple[str, ...]) -> tuple[list[str], str]:
    """The JSON paths checked for a key twice, and the SQL list of their keys per record."""
    paths = ["$", *(f"$.{g}" for g in groups)]
    keys = ", ".join(f"CASE WHEN json_type(rec, '{p}') = 'OBJECT' THEN json_keys(rec, '{p}') "
                     "END" for p in paths)
    return paths, f"[{keys}]"


def record_problem_sql(names: list[tuple[str | None, str]], groups: tuple[str, ...]) -> str:
    """True for a record that ``record_keys`` or ``duplicate_keys`` would refuse, as a
    ``build_profile`` flag over ``rec`` and ``ts`` (the JSON types of ``names``): an object
    whose key count equals its number of known keys found, at the top and in each group,
    has no unknown key and none twice. Counting is ~10x cheaper than list functions over
    the keys, so the rules themselves run one by one only when some record is flagged."""

    def found(conditions: list[str]) -> str:
        return " + ".join(f"({c} IS NOT NULL)::INTEGER" for c in conditions) or "0"

    # One path list per function, so each parses the record once (the same call repeated
    # is computed once: DuckDB eliminates common subexpressions, but not across CASE arms,
    # hence ORs; json_keys of a non-object is [], never an error).
    keys = "json_keys(rec, [" + ", ".join(["'$'", *(f"'$.{g}'" for g in groups)]) + "])"
    types = "json_type(rec, [" + ", ".join([*(f"'$.{g}'" for g in groups), "'$'"]) + "])"
    top = [f"ts[{i + 1}]" for i, (g, _) in enumerate(names) if g is None]
    top += [f"{types}[{j + 1}]" for j in range(len(groups))]
    parts = [f"len({keys}[1]) <> {found(top)}"]
    for j, g in enumerate(groups):
        inside = [f"ts[{i + 1}]" for i, (group, _) in enumerate(names) if group == g]
        parts.append(f"coalesce(len({keys}[{j + 2}]), 0) <> {found(inside)}")
    # last: ORs run left to right on the rows still undecided (measured 3x faster so)
    return " OR ".join([*parts, "rec IS NULL", f"{types}[{len(groups) + 1}] <> 'OBJECT'"])


def duplicate_keys(con: duckdb.DuckDBPyConnection, section: str, groups: tuple[str, ...]
                   ) -> None:
    """A key twice in one object is an error: JSON readers disagree on which value wins
    (DuckDB keeps the first, Python the last), so any choice would silently change data."""
    paths, keys = _duplicate_keys_sql(groups)
    row = con.execute(
        f"SELECT pos, {keys} FROM src_{section} WHERE list_bool_or(list_transform({keys}, "
        "lambda ks: len(ks) <> len(list_distinct(ks)))) ORDER BY pos LIMIT 1").fetchone()
    if row is None:
        return
    pos, lists = row
    for path, names in zip(paths, lists, strict=True):
        twice = next((k for k in names or [] if names.count(k) > 1), None)
        if twice is not None:
            where = path[2:] or None
            raise DataError(f"key {twice!r} appears twice in one object: keep one (JSON readers "
                            "disagree on which value wins)", section=section, position=pos,
                            field=f"{where}.{twice}" if where else twice)


def colliding_fields(con: duckdb.DuckDBPyConnection, section: str,
                     pairs: list[tuple[str, str]]) -> None:
    """Field names that would become one column: equal but for case (``age``/``Age``; SQL
    names are case-insensitive), or one a derived column of the other (``price`` and
    ``price.missing``); and more fields than the compiler handles."""
    if len(pairs) > MAX_FIELDS:
        raise DataError(f"{len(pairs)} fields; at most {MAX_FIELDS} per section are supported "
                        "(disable or merge fields)", section=section)
    for group in GROUPS:
        names = [f for g, f in pairs if g == group]
        lower: dict[str, str] = {}
        for name in names:
            other = lower.setdefault(name.lower(), name)
            if other != name:
                _collision(con, section, group, name, f"differs from {other!r} only in case "
                           "(field names are case-insensitive); rename one")
        present = set(names)
        for name in names:
            for suffix in DERIVED_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in present:
                    _collision(con, section, group, name, f"collides with the {suffix!r} "
                               f"column of field {name[: -len(suffix)]!r}; rename one")


def _collision(con: duckdb.DuckDBPyConnection, section: str, group: str, name: str,
               reason: str) -> None:
    row = con.execute(f"SELECT min(pos) FROM src_{section} WHERE list_contains("
                      f"json_keys(rec, '$.{group}'), ?)", [name]).fetchone()
    raise DataError(reason, section=section, position=row[0] if row else None,
                    field=f"{group}.{name}")


def untrimmed_ids(p: Profile, f: Field) -> None:
    """' 42' and '42' would be two ids that print alike: leading/trailing space is refused."""
    p.check(f, f"{f.t} = 'VARCHAR' AND {f.v} <> trim({f.v})",
            "is {value}: ids must not start or end with whitespace")


def huge_numbers(p: Profile, f: Field) -> None:
    """Values like 1e200 overflow float32 and squared statistics: refused with the bound."""
    p.check(f, f"abs(TRY_CAST({f.v} AS DOUBLE)) > {MAX_ABS_CONTINUOUS}",
            f"is {{value}}: continuous values must be within +-{MAX_ABS_CONTINUOUS:g} "
            "(rescale the field, e.g. to thousands)")
