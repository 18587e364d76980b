"""What every op is: fit on the training window, then compile every entity's rows.

An op reads one raw field (``users.categorical.country``, say) through ``Context`` and
returns a SQL relation keyed by the entity ``key`` with its output columns. Fitted state
(vocabulary, statistics) goes into the ``vocab`` and ``stats`` tables and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa

from unirec.errors import StoreError
from unirec.store.arrow import to_numpy
from unirec.store.layout import SIDES
from unirec.store.sql import ident, literal


@dataclass(frozen=True)
class FeatureSpec:
    """One raw field and how it compiles."""

    side: str  # "user" | "item"
    group: str  # categorical | continuous | text | image | temporal
    field: str
    op: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        """The feature's name in output tables and tensors: ``group.field``."""
        return f"{self.group}.{self.field}"

    @property
    def key(self) -> str:
        """The config key: ``side.group.field``."""
        return f"{self.side}.{self.name}"


@dataclass(frozen=True)
class Output:
    """One compiled column: its name, numpy dtype and per-row shape."""

    column: str
    dtype: str  # "int32" | "float32"
    shape: tuple[int, ...] = ()


class Context:
    """SQL access for ops: the raw field, the training window, and the fitted-state tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, base_dir: str = ".",
                 previous: str | None = None) -> None:
        self.con = con
        self.base_dir = base_dir  # relative image paths resolve against the input's folder
        # featurize --append: the attached catalog of the store being extended (its vocab)
        self.previous = previous

    def value_sql(self, spec: FeatureSpec) -> str:
        """SELECT key, value FROM the raw table (value = the field, NULLs included)."""
        table, id_col = SIDES[spec.side].table, SIDES[spec.side].id
        return (f'SELECT {id_col} AS key, "{spec.group}".{ident(spec.field)} AS value '
                f"FROM {table}")

    def train_value_sql(self, spec: FeatureSpec) -> str:
        """The same, restricted to entities seen in training interactions."""
        table, id_col = SIDES[spec.side].table, SIDES[spec.side].id
        return (f"{self.value_sql(spec)} WHERE {id_col} IN "
                f"(SELECT {id_col} FROM train_{table})")

    def add_vocab(self, spec: FeatureSpec, source_sql: str) -> None:
        """Insert (field, value, index, count) rows from ``source_sql`` (value, index, count)."""
        self.con.execute(f"INSERT INTO vocab SELECT {literal(spec.key)}, value, index, count "
                         f"FROM ({source_sql})")

    def add_stats(self, spec: FeatureSpec, transform: str, row: dict[str, float]) -> None:
        self.con.execute(
            "INSERT INTO stats VALUES (?, ?, ?, ?, ?, ?, ?)",
            [spec.key, transform, row["mean"], row["std"], row["min"], row["max"],
             int(row["missing"])],
        )

    def fetch_one(self, sql: str) -> tuple:
        return self.con.execute(sql).fetchone()

    def fit_stats(self, x: str, source_sql: str) -> dict[str, float]:
        """Mean, population std, min and max of ``x`` over ``source_sql``, and its NULL count.

        Why not plain ``avg``/``stddev_pop``: DuckDB sums in parallel, so their last digits
        change from run to run on large tables, and with them every normalised value. Here
        the values are sorted first and aggregated in that one order, so the same data gives
        the same bits whatever the row order or thread count (the Spark engine uses this too).
        """
        mean, std, lo, hi, missing = self.fetch_one(
            "SELECT list_aggregate(s, 'fsum') / len(s), list_aggregate(s, 'stddev_pop'), "
            "s[1], s[-1], n - len(coalesce(s, [])) FROM (SELECT list(x ORDER BY x) FILTER "
            f"(WHERE x IS NOT NULL) AS s, count(*) AS n FROM (SELECT {x} AS x FROM "
            f"({source_sql})))")
        return {"mean": mean or 0.0, "std": std or 0.0, "min": lo or 0.0, "max": hi or 0.0,
                "missing": missing}


STATE_VERSION = 1
"""Layout of the fitted state an op writes to the manifest; bumped when an op's state changes
meaning, so a reader refuses state it would misread."""
_SPEC_KEYS = {"name", "side", "group", "field", "op", "params", "outputs"}


class Op:
    """Base class. Subclasses register with ``@OPS.register(name)`` and set ``accepts``."""

    name: ClassVar[str] = ""
    #: raw SQL types (of the field) this op accepts, e.g. ("VARCHAR", "VARCHAR[]")
    accepts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.state: dict[str, Any] = {}  # fitted on the training window
        self.counts: dict[str, int] = {}  # what was seen over all rows (for the report)

    def outputs(self) -> list[Output]:
        """The columns this op adds (known before fit: shapes come from the config)."""
        raise NotImplementedError

    def fit(self, ctx: Context) -> None:
        """Learn state from the training window only."""

    def extend(self, ctx: Context, previous: dict[str, Any]) -> None:
        """``featurize --append``: keep the fitted state of ``previous`` (this feature's
        manifest entry in the store being extended) and only add to it, so every index and
        statistic the model was trained with means the same. The default refits: right
        for ops without fitted statistics (text, images, id lists); an op with fitted
        state overrides this."""
        self.fit(ctx)

    def transform_sql(self, ctx: Context) -> str:
        """SELECT key, <one column per output> for every entity (missing -> the 0 row)."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry for this feature: the spec, the outputs, the fitted state
        (its keys listed in ``state_keys``, its layout versioned by ``state_version``) and
        the counts for the report. ``Op.from_json`` reads it back."""
        return {
            "name": self.spec.name, "side": self.spec.side, "group": self.spec.group,
            "field": self.spec.field, "op": self.name, "params": self.spec.params,
            "outputs": [{"column": o.column, "dtype": o.dtype, "shape": list(o.shape)}
                        for o in self.outputs()],
            **self.state, **self.counts,
            "state_version": STATE_VERSION, "state_keys": sorted(self.state),
        }

    @staticmethod
    def from_json(entry: dict[str, Any]) -> Op:
        """The fitted op of a manifest entry (``to_json``'s output), ready to transform new
        records exactly as featurize did; nothing is refitted."""
        version = entry.get("state_version", 1)
        if version != STATE_VERSION:
            raise StoreError(f"feature {entry.get('name')!r} has fitted state version "
                             f"{version}; this unirec reads version {STATE_VERSION}: re-run "
                             "`unirec featurize`")
        from unirec.features.ops.registry import OPS

        spec = FeatureSpec(entry["side"], entry["group"], entry["field"], entry["op"],
                           entry["params"])
        op = OPS.get(entry["op"])(spec)
        keys = entry.get("state_keys")
        if keys is None:  # a manifest written before state_keys: all but the spec's keys
            keys = [k for k in entry if k not in _SPEC_KEYS]
        op.state = {k: entry[k] for k in keys}
        return op

    def col(self, suffix: str = "") -> str:
        """The quoted output column name, e.g. "categorical.genres.length"."""
        return ident(self.spec.name + suffix)


def pad_left_sql(list_sql: str, length: int, element: str = "INTEGER") -> str:
    """Keep the last ``length`` elements, left-padded with 0 (most recent last): the SQL twin
    of ``unirec.store.csr.pad_left``, for lists of ``element``."""
    tail = f"list_slice({list_sql}, -{length}, -1)"
    return (f"list_concat(list_resize([]::{element}[], {length} - len({tail}), 0), {tail})")


def column_array(table: pa.Table, column: str, shape: tuple[int, ...], dtype: str
                  ) -> np.ndarray:
    """An Arrow column (scalars or equal-length lists) as a (rows, *shape) numpy array."""
    col = table.column(column).combine_chunks()
    if shape:
        values = col.flatten() if not isinstance(col, pa.FixedSizeListArray) else col.values
        arr = to_numpy(values).reshape(len(col), *shape)
    else:
        arr = to_numpy(col)
    arr = arr.astype(dtype, copy=False)
    return arr if arr.flags.writeable else arr.copy()
