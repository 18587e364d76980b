"""``featurize --append``: new interactions, users and items folded into an existing store.

What stays: every user and item index (new ids get the next indices, a record whose id the
store holds replaces that record's fields and keeps its index), every categorical index
(new values get the next ones; ``min_count`` counts over the whole training window), and
every fitted statistic (normalize means and spreads, bucket edges: *frozen*, so the
model's inputs for the entities it knows do not move). What is recomputed, exactly as one
featurize of old + new would: the split (the same leakage rules over all interactions),
samples and histories, popularity, sequences and shards. Text and images are embedded only
when new (the embedding cache). ``refit_stats`` refits every statistic over old + new
instead: a full rebuild from the store's own raw tables, which hold every input so far.

The design is a re-compile of the store's raw tables plus the new records, not a patch of
its files: it costs a featurize of all the data (minus the embeddings), and buys exactly
the result of one featurize of A + B, through the same atomic swap (a failed append leaves
the store byte-identical). The served model is carried over: it keeps answering for the
users and items it knows until ``fit --warm-start`` swaps in the extended one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.errors import ConfigError, DataError, StoreError
from unirec.features.validate import GROUPS
from unirec.featurize.raw import build_raw_tables
from unirec.store import DB_FILE, STORE_FORMAT
from unirec.store.atomic import building
from unirec.store.guard import MARKER, MARKER_TEXT, is_store, resolve_store, store_lock
from unirec.store.layout import SIDES
from unirec.store.lineage import store_identity

SECTION_OF = {s.table: s.section for s in SIDES.values()}
ID_OF = {s.table: s.id for s in SIDES.values()}
# config sections an append may change: how to read the new records, and training (not
# featurize's business); the rest says what the store compiles and stays the store's
_MAY_CHANGE = ("validate", "ingest", "train")


def append_data(data: str | Path, store: str | Path, config: Config | None = None, *,
                refit_stats: bool = False) -> dict[str, Any]:
    """Fold ``data`` into the store at ``store``; return the report (see the module doc).

    ``config`` None uses the store's own config; one that differs from it outside
    ``validate``/``ingest`` is refused (a changed config is a full featurize).
    """
    from unirec.featurize.run import _file_digest, _run

    data, started = Path(data), time.perf_counter()
    target = resolve_store(store)
    if not is_store(target):
        raise StoreError(f"--append needs an existing store at {str(store)!r}: run `unirec "
                         f"featurize DATA --store {store}` first")
    with store_lock(target, "featurize"):
        old = json.loads((target / "manifest.json").read_text())
        if old.get("store_format") != STORE_FORMAT or "stats_id" not in old:
            raise StoreError(f"the store {str(store)!r} was written by unirec "
                             f"{old.get('unirec_version', '?')} without append support: run "
                             "`unirec featurize` over all the data once")
        cfg = _config(old, config, store)
        frozen = None if refit_stats else {f"{f['side']}.{f['name']}": f for f in old["features"]}
        with building(target) as tmp:
            merge = _Merge(target, old)
            report, manifest = _run(tmp, data, target, cfg, started,
                                    raw=merge.raw(data, cfg), frozen=frozen)
            _check_plan(old, manifest)
            digest = _file_digest(data)
            entry = {"input": {"path": str(data.absolute()), "sha256": digest},
                     "counts": merge.counts, "out_of_order": merge.out_of_order,
                     "positions": {"interactions": [old["interactions_end"],
                                                    report["interactions_end"]]},
                     "refit_stats": refit_stats,
                     "seconds": round(time.perf_counter() - started, 3)}
            report["append"] = entry
            report["appends"] = [*_old_report(target).get("appends", []), entry]
            if merge.out_of_order:
                report["warnings"].append({
                    "section": "interactions", "field": "timestamp",
                    "count": merge.out_of_order, "message": "appended interactions older "
                    "than their user's latest stored one: placed at their time, so the split "
                    "moved around them (see docs/incremental.md)"})
            # the store's config stays what compiled it (the model records its hash); how
            # this append's records were read is in its entry
            entry["validate"] = cfg.to_dict()["validate"]
            manifest.update(
                config=old["config"], config_hash=old["config_hash"],
                input={**old["input"], "sha256": hashlib.sha256(
                    f"{old['input']['sha256']} {digest}".encode()).hexdigest()},
                stats_id=old["stats_id"] if not refit_stats else
                hashlib.sha256(f"{old['stats_id']} {digest}".encode()).hexdigest()[:16],
                ancestors=[store_identity(old), *old.get("ancestors", [])],
                appends=[*old.get("appends", []), entry])
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
            (tmp / MARKER).write_text(MARKER_TEXT)
            _link_tree(target / "model", tmp / "model")
    return report


def _old_report(store: Path) -> dict[str, Any]:
    try:
        return json.loads((store / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def _config(old: dict[str, Any], given: Config | None, store: str | Path) -> Config:
    """The store's config, with ``validate``/``ingest`` from ``given`` (how to read B)."""
    try:
        stored = Config.model_validate(old["config"]).to_dict()  # defaults of this version
    except ValueError:  # pydantic's ValidationError: a key this version does not know
        raise StoreError(f"the store {str(store)!r} was compiled with a config this version "
                         "cannot read: run `unirec featurize` over all the data once") from None
    if given is None:
        return Config.model_validate(stored)
    mine = given.to_dict()
    changed = [f"{sec}.{k}" for sec, part in mine.items() if sec not in _MAY_CHANGE
               for k, v in part.items() if stored[sec].get(k) != v]
    if changed:
        raise ConfigError(f"--append keeps the store's config, and this one changes "
                          f"{', '.join(changed[:3])}: a changed config is a full rebuild, "
                          f"run `unirec featurize DATA --store {store}` over all the data")
    return Config.model_validate({**stored, **{s: mine[s] for s in _MAY_CHANGE}})


def _check_plan(old: dict[str, Any], new: dict[str, Any]) -> None:
    """The appended store must compile every feature as the store did (the model's inputs)."""
    def plan(m: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {f"{f['side']}.{f['name']}": (f["op"], json.dumps(f["params"], sort_keys=True))
                for f in m["features"]}

    before, after = plan(old), plan(new)
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            what = "is new" if key not in before else "is gone" if key not in after else \
                f"would compile with {after[key][0]} instead of {before[key][0]}"
            raise DataError(f"feature {key} {what} with this append: the store and its model "
                            "have fixed inputs; run `unirec featurize` over all the data")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link the served model into the new store: it keeps answering (for the users and
    items it knows) until ``fit --warm-start`` replaces it; the old store keeps every byte."""
    if not src.is_dir():
        return
    for path in src.rglob("*"):
        if path.is_file():
            out = dst / path.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, out)
            except OSError:
                shutil.copy2(path, out)


def _fields(con: duckdb.DuckDBPyConnection, table: str, group: str) -> dict[str, str]:
    rel = con.sql(f"SELECT {group}.* FROM {table} LIMIT 0")
    return {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}


class _Merge:
    """The raw step of an append: the new input validated alone, then checked against the
    store's raw tables (attached read-only as ``old``) and merged into them."""

    def __init__(self, store: Path, manifest: dict[str, Any]) -> None:
        self.store, self.manifest = store, manifest
        self.counts: dict[str, int] = {}
        self.out_of_order = 0

    def raw(self, data: Path, cfg: Config) -> Callable[..., dict[str, Any]]:
        def run(con: duckdb.DuckDBPyConnection, stage: Callable[[str], None]) -> dict[str, Any]:
            db = str(self.store / DB_FILE).replace("'", "''")
            con.execute(f"ATTACH '{db}' AS old (READ_ONLY)")
            self.base = str(Path(data if data.is_dir() else data.parent).absolute())
            report = build_raw_tables(con, data, cfg, stage, extend=self._entities)
            self._interactions(con)
            return report
        return run

    def _entities(self, con: duckdb.DuckDBPyConnection) -> None:
        old_base = self.manifest["input"].get("base_dir", self.base)
        for side in SIDES.values():
            self._entity(con, side.table, side.id, old_base)

    def _fail(self, con: duckdb.DuckDBPyConnection, table: str, where: str, field: str,
              message: str) -> None:
        pos, rid = con.execute(f"SELECT position, {ID_OF[table]} FROM {table} WHERE {where} "
                               "ORDER BY position LIMIT 1").fetchone()
        raise DataError(message, section=SECTION_OF[table], position=pos, record_id=rid,
                        field=field)

    def _entity(self, con: duckdb.DuckDBPyConnection, table: str, id_col: str,
                old_base: str) -> None:
        new_cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        old_cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE old.{table}").fetchall()}
        n_new = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if n_new and new_cols[id_col] != old_cols[id_col]:
            self._fail(con, table, "TRUE", id_col,
                       f"{id_col} is {new_cols[id_col]} here but {old_cols[id_col]} in the "
                       "store: appended ids must have the store's type")
        select = [f"n.{id_col}::{old_cols[id_col]}", f"coalesce(o.position, n.position + "
                  f"(SELECT coalesce(max(position), -1) + 1 FROM old.{table}))"]
        kept = [f"o.{id_col}", "o.position"]
        for group in (g for g in GROUPS if g in old_cols or g in new_cols):
            new_f = _fields(con, table, group) if group in new_cols else {}
            old_f = _fields(con, f"old.{table}", group) if group in old_cols else {}
            self._check_fields(con, table, group, new_f, old_f)
            if not old_f:
                continue
            select.append(_packed("n", group, old_f, new_f, self.base))
            kept.append(_packed("o", group, old_f, old_f, old_base) if group == "image"
                        else f"o.{group}")
        self.counts[f"{table}_new"], self.counts[f"{table}_changed"] = con.execute(
            f"SELECT count(*) FILTER (WHERE o.{id_col} IS NULL), count(o.{id_col}) FROM "
            f"{table} n LEFT JOIN old.{table} o ON o.{id_col} = n.{id_col}::"
            f"{old_cols[id_col]}").fetchone()
        con.execute(
            f"CREATE TEMP TABLE merged AS SELECT * FROM (SELECT {', '.join(kept)} FROM "
            f"old.{table} o WHERE o.{id_col} NOT IN (SELECT {id_col}::{old_cols[id_col]} "
            f"FROM {table}) UNION ALL SELECT {', '.join(select)} FROM {table} n LEFT JOIN "
            f"old.{table} o ON o.{id_col} = n.{id_col}::{old_cols[id_col]}) ORDER BY 2")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM merged ORDER BY position")
        con.execute("DROP TABLE merged")

    def _check_fields(self, con: duckdb.DuckDBPyConnection, table: str, group: str,
                      new_f: dict[str, str], old_f: dict[str, str]) -> None:
        """Every appended field is one the store has, of its type (a lone string where the
        store has lists, or an integer where it has floats, is that type)."""
        for name, sql_type in new_f.items():
            where, field = f"{group}.{_ident(name)} IS NOT NULL", f"{group}.{name}"
            if name not in old_f:
                self._fail(con, table, where, field,
                           f"a new field: the store has no {group}.{name}, so its model has no "
                           "input for it; an append cannot add fields (run `unirec featurize` "
                           "over all the data)")
            if sql_type != old_f[name] and old_f[name] != f"{sql_type}[]" and \
                    (old_f[name], sql_type) != ("DOUBLE", "BIGINT"):
                self._fail(con, table, where, field, f"is {sql_type} here but {old_f[name]} in "
                           "the store; use one type for this field")

    def _interactions(self, con: duckdb.DuckDBPyConnection) -> None:
        """Old interactions as they are, the new ones after them (positions continue)."""
        cols = {r[0]: r[1] for r in con.execute("DESCRIBE old.interactions").fetchall()}
        self.counts["interactions"] = con.execute(
            "SELECT count(*) FROM interactions").fetchone()[0]
        self.out_of_order = con.execute(
            "SELECT count(*) FROM interactions n JOIN (SELECT user_id, max(timestamp) AS t "
            "FROM old.interactions GROUP BY user_id) o ON n.user_id = o.user_id "
            "WHERE n.timestamp < o.t").fetchone()[0]
        end = int(self.manifest["interactions_end"])
        select = ", ".join(f"{c}::{t}" if c != "position" else f"position + {end}"
                           for c, t in cols.items())
        con.execute(f"CREATE TEMP TABLE merged AS SELECT * FROM old.interactions UNION ALL "
                    f"SELECT {select} FROM interactions")
        con.execute("DROP TABLE interactions")
        con.execute("CREATE TABLE interactions AS SELECT * FROM merged ORDER BY position")
        con.execute("DROP TABLE merged")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _packed(alias: str, group: str, old_f: dict[str, str], given: dict[str, str],
            base: str) -> str:
    """The ``group`` struct of rows ``alias`` in the store's field order and types: fields
    not ``given`` are NULL, a lone value becomes a one-element list where the store has
    lists, and relative image paths resolve against the input they came from (``base``)."""
    packed = []
    for name, sql_type in old_f.items():
        value = f"{alias}.{group}.{_ident(name)}" if name in given else f"NULL::{sql_type}"
        if name in given and given[name] == sql_type[:-2] and sql_type.endswith("[]"):
            value = f"CASE WHEN {value} IS NULL THEN NULL ELSE [{value}] END"
        if group == "image":
            value = _absolute(value, base)
        packed.append(f"{_ident(name)} := ({value})::{sql_type}")
    return f"struct_pack({', '.join(packed)}) AS {group}"


def _absolute(value: str, base: str) -> str:
    base = base.replace("'", "''")
    return (f"CASE WHEN {value} IS NULL OR starts_with({value}, '/') THEN {value} "
            f"ELSE '{base}/' || {value} END")
