"""The typed raw tables ``users``, ``items``, ``interactions``: validated input, as given.

Validation (validate.py) says what is wrong; this module turns the validated fields into
tables, applies the drop policies and counts every row it drops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.errors import DataError
from unirec.features.profile import Profile
from unirec.features.validate import (
    GROUPS,
    Column,
    Findings,
    bad_timestamp_reason,
    entity_columns,
    interaction_columns,
    typed_interaction_columns,
)
from unirec.featurize.ingest import drop_sources, load_sources, materialize, typed_columns
from unirec.store.layout import SECTION_TABLES, SECTIONS
from unirec.store.sql import ident
from unirec.version import __version__


def build_raw_tables(con: duckdb.DuckDBPyConnection, data: Path, cfg: Config,
                     stage: Callable[[str], None] = lambda name: None,
                     extend: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                     ) -> dict[str, Any]:
    """Read and validate into typed users/items/interactions (the raw, inspectable tables).

    ``extend`` (``featurize --append``) runs once users and items are typed, before the
    interactions are checked against them: it folds the store's own users and items in, so
    new interactions may name entities the store already holds. Without it an input
    without interactions is an error; an append may bring records alone.
    """
    source = load_sources(con, data, cfg.ingest)
    stage("validate")
    findings = Findings()
    seen = {s: con.execute(f"SELECT count(*) FROM src_{s}").fetchone()[0] for s in SECTIONS}
    empty = cfg.validate_.empty_string_is_missing
    for section in ("user_data", "item_data"):
        prof, cols = entity_columns(con, section, findings, empty)
        _entity_table(con, prof, cols, cfg.validate_.on_duplicate_id, findings)
    kept = {s: con.execute(f"SELECT count(*) FROM {SECTION_TABLES[s]}").fetchone()[0]
            for s in ("user_data", "item_data")}
    if extend is not None:
        extend(con)
    typed = typed_columns(con, "interactions")
    found = typed_interaction_columns(con, typed) if typed else None
    if found is None:  # as JSON: every rule, each problem located and worded
        materialize(con, "interactions", source.files.get("interactions", data))
        found = interaction_columns(con)
    _interactions_table(con, *found, cfg, findings)
    drop_sources(con)
    kept["interactions"] = con.execute("SELECT count(*) FROM interactions").fetchone()[0]
    if kept["interactions"] == 0 and extend is None:
        raise DataError("no interactions left to learn from", section="interactions")
    return {
        "unirec_version": __version__,
        "input": {"path": str(data.absolute()), "form": source.form},
        "sections": {
            s: {"seen": seen[s], "kept": kept[s], "dropped": findings.dropped.get(s, {})}
            for s in SECTIONS
        },
        "warnings": findings.warnings,
    }


def entity_select(cols: list[Column]) -> list[str]:
    """The typed users / items columns over a profile: id, position, one struct per group."""
    id_col = cols[0]
    select = [f"{id_col.expr} AS {id_col.name}", "pos AS position"]
    for group in GROUPS:
        members = [c for c in cols[1:] if c.group == group]
        if members:
            packed = ", ".join(f"{ident(c.name)} := {c.expr}" for c in members)
            select.append(f"struct_pack({packed}) AS {group}")
    return select


def stage_select(prof: Profile, cols: dict[str, Column],
                 int_ids: frozenset[str] = frozenset()) -> list[str]:
    """The typed interaction columns over a profile, ids as text (``user_key``/``item_key``)
    for matching against either id type, and the timestamp's JSON type (``ts_type``); the
    id columns in ``int_ids`` (see ``_integer_ids``) stay BIGINT."""
    select = ["pos AS position"]
    for name, key in (("user_id", "user_key"), ("item_id", "item_key")):
        select.append(f"{cols[name].expr}{'' if name in int_ids else '::VARCHAR'} AS {key}")
    select += [f"{c.expr} AS {name}" for name, c in cols.items() if name not in ("user_id",
                                                                                "item_id")]
    ts = next(f for f in prof.fields if f.name == "timestamp")
    select.append(f"{ts.t} AS ts_type")
    return select


def _integer_ids(con: duckdb.DuckDBPyConnection, cols: dict[str, Column]) -> frozenset[str]:
    """The id columns that are BIGINT both in the interactions and in their entity table:
    those are matched by an integer join, which matches exactly what the text join matches
    (equal integers, equal decimal texts) for less."""
    out = set()
    for side in ("user", "item"):
        rows = con.execute(f"DESCRIBE {side}s").fetchall()  # resolved as the join resolves it
        entity = next(str(row[1]) for row in rows if row[0] == f"{side}_id")
        if entity == "BIGINT" and cols[f"{side}_id"].sql_type == "BIGINT":
            out.add(f"{side}_id")
    return frozenset(out)


def _entity_table(
    con: duckdb.DuckDBPyConnection,
    prof: Profile,
    cols: list[Column],
    on_duplicate: str,
    findings: Findings,
) -> None:
    """users / items: id, position, then one struct column per feature group."""
    table = SECTION_TABLES[prof.section]
    id_col = cols[0]
    con.execute(f"CREATE TABLE {table} AS SELECT {', '.join(entity_select(cols))} "
                f"FROM {prof.table} ORDER BY pos")
    dup = con.execute(
        f"SELECT position, {id_col.name}, first FROM (SELECT position, {id_col.name}, "
        f"min(position) OVER (PARTITION BY {id_col.name}) AS first FROM {table}) "
        "WHERE position > first ORDER BY position"
    ).fetchall()
    if not dup:
        return
    if on_duplicate == "error":
        pos, rid, first = dup[0]
        raise DataError(
            f"duplicate {id_col.name} {rid!r}: {prof.section}[{first}] has it too "
            f"(duplicate records: {len(dup)}; use --on-duplicate-id=first to keep the first)",
            section=prof.section, position=pos, field=id_col.name,
        )
    con.execute(f"DELETE FROM {table} WHERE position IN (SELECT position FROM (SELECT "
                f"position, min(position) OVER (PARTITION BY {id_col.name}) AS first "
                f"FROM {table}) WHERE position > first)")
    findings.drop(prof.section, "duplicate_id", len(dup))


def _interactions_table(
    con: duckdb.DuckDBPyConnection,
    prof: Profile,
    cols: dict[str, Column],
    cfg: Config,
    findings: Findings,
) -> None:
    """Interactions keep input order; ids are matched to entities by their text form.

    Most inputs drop nothing: one query types the rows, matches both ids and writes the
    table, and a count over it proves that every row is there with a timestamp. Otherwise
    that table goes and the full path runs: one scan types the rows and matches both ids
    (left joins), one aggregate counts every drop reason (and finds the first offender, for
    the error), one write keeps the rest."""
    ints = _integer_ids(con, cols)
    select = stage_select(prof, cols, ints)
    ts = next(f for f in prof.fields if f.name == "timestamp")
    as_key = {k: "" if k in ints else "::VARCHAR" for k in ("user_id", "item_id")}

    def joined(how: str) -> str:
        return (f"(SELECT {', '.join(select)} FROM {prof.table}) s "
                f"{how} JOIN users u ON s.user_key = u.user_id{as_key['user_id']} "
                f"{how} JOIN items i ON s.item_key = i.item_id{as_key['item_id']}")

    if _nothing_dropped(con, prof, joined("INNER")):
        return
    con.execute(f"CREATE TEMP TABLE stage AS SELECT s.*, u.user_id, i.item_id FROM "
                f"{joined('LEFT')}")
    known = "user_id IS NOT NULL AND item_id IS NOT NULL"
    wheres = {"user": "user_id IS NULL", "item": "user_id IS NOT NULL AND item_id IS NULL",
              "timed": f"{known} AND ts_type IS NOT NULL AND ts_type <> 'NULL'",
              "untimed": f"{known} AND timestamp IS NULL"}
    row = con.execute("SELECT " + ", ".join(
        f"count(*) FILTER (WHERE {w}), min(position) FILTER (WHERE {w}), "
        f"arg_min({'item' if k == 'item' else 'user'}_key::VARCHAR, position) "
        f"FILTER (WHERE {w})"
        for k, w in wheres.items()) + " FROM stage").fetchone()
    found = {k: row[3 * j: 3 * j + 3] for j, k in enumerate(wheres)}
    policy = cfg.validate_
    for side, key, flag in (("user", "user_id", policy.on_unknown_user),
                            ("item", "item_id", policy.on_unknown_item)):
        n, first, value = found[side]
        if n and flag == "error":
            section = "user_data" if side == "user" else "item_data"
            raise DataError(
                f"{key} {value!r} is not in {section} (interactions naming unknown "
                f"{side}s: {n}; use --on-unknown-{side}=drop to skip such rows)",
                section="interactions", position=first, field=key,
            )
        findings.drop("interactions", f"unknown_{side}", n)
    keep = known
    if found["timed"][0]:
        n, first, _ = found["untimed"]
        if n and policy.on_bad_timestamp == "error":
            raise DataError(
                bad_timestamp_reason(prof, ts, first)
                + f" (interactions with this problem: {n}; "
                "use --on-bad-timestamp=drop to skip them)",
                section="interactions", position=first, field="timestamp",
            )
        findings.drop("interactions", "bad_timestamp", n)
        keep += " AND timestamp IS NOT NULL"
    con.execute(
        "CREATE TABLE interactions AS SELECT position, user_id, item_id, interaction_type, "
        f"timestamp, weight, rating FROM stage WHERE {keep} ORDER BY position"
    )
    con.execute("DROP TABLE stage")


def _nothing_dropped(con: duckdb.DuckDBPyConnection, prof: Profile, inner: str) -> bool:
    """Write ``interactions`` through inner joins and keep it if no row was lost: every
    input row matched one user and one item (ids are unique by now) and has a timestamp,
    so no drop rule applies, and the table is the one the full path writes. Else drop it
    and say so."""
    con.execute(f"CREATE TABLE interactions AS SELECT s.position, u.user_id, i.item_id, "
                f"s.interaction_type, s.timestamp, s.weight, s.rating FROM {inner} "
                "ORDER BY s.position")
    kept, timed = con.execute("SELECT count(*), count(timestamp) FROM interactions").fetchone()
    if kept == timed == con.execute(f"SELECT count(*) FROM {prof.table}").fetchone()[0]:
        return True
    con.execute("DROP TABLE interactions")
    return False
