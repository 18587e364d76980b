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

from unirec.store.layout import SIDES


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

    def __init__(self, con: duckdb.DuckDBPyConnection, base_dir: str = ".") -> None:
        self.con = con
        self.base_dir = base_dir  # relative image paths resolve against the input's folder

    def value_sql(self, spec: FeatureSpec) -> str:
        """SELECT key, value FROM the raw table (value = the field, NULLs included)."""
        table, id_col, _, _ = SIDES[spec.side]
        return (f'SELECT {id_col} AS key, "{spec.group}"."{_q(spec.field)}" AS value '
                f"FROM {table}")

    def train_value_sql(self, spec: FeatureSpec) -> str:
        """The same, restricted to entities seen in training interactions."""
        table, id_col, _, _ = SIDES[spec.side]
        return (f"{self.value_sql(spec)} WHERE {id_col} IN "
                f"(SELECT {id_col} FROM train_{table})")

    def add_vocab(self, spec: FeatureSpec, source_sql: str) -> None:
        """Insert (field, value, index, count) rows from ``source_sql`` (value, index, count)."""
        self.con.execute(f"INSERT INTO vocab SELECT '{_s(spec.key)}', value, index, count "
                         f"FROM ({source_sql})")

    def add_stats(self, spec: FeatureSpec, transform: str, row: dict[str, float]) -> None:
        self.con.execute(
            "INSERT INTO stats VALUES (?, ?, ?, ?, ?, ?, ?)",
            [spec.key, transform, row["mean"], row["std"], row["min"], row["max"],
             int(row["missing"])],
        )

    def fetch_one(self, sql: str) -> tuple:
        return self.con.execute(sql).fetchone()


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

    def transform_sql(self, ctx: Context) -> str:
        """SELECT key, <one column per output> for every entity (missing -> the 0 row)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this feature."""
        return {
            "name": self.spec.name, "side": self.spec.side, "group": self.spec.group,
            "field": self.spec.field, "op": self.name, "params": self.spec.params,
            "outputs": [{"column": o.column, "dtype": o.dtype, "shape": list(o.shape)}
                        for o in self.outputs()],
            **self.state, **self.counts,
        }

    def col(self, suffix: str = "") -> str:
        """The quoted output column name, e.g. "categorical.genres.length"."""
        return '"' + _q(self.spec.name + suffix) + '"'


def _q(name: str) -> str:
    return name.replace('"', '""')


def _s(text: str) -> str:
    return text.replace("'", "''")


def pad_left_sql(list_sql: str, length: int) -> str:
    """Keep the last ``length`` elements, left-padded with 0 (most recent last)."""
    tail = f"list_slice({list_sql}, -{length}, -1)"
    return (f"list_concat(list_resize([]::INTEGER[], {length} - len({tail}), 0), {tail})")


def column_array(table: pa.Table, column: str, shape: tuple[int, ...], dtype: str
                  ) -> np.ndarray:
    """An Arrow column (scalars or equal-length lists) as a (rows, *shape) numpy array."""
    col = table.column(column).combine_chunks()
    if shape:
        values = col.flatten() if not isinstance(col, pa.FixedSizeListArray) else col.values
        arr = values.to_numpy(zero_copy_only=False).reshape(len(col), *shape)
    else:
        arr = col.to_numpy(zero_copy_only=False)
    return arr.astype(dtype, copy=False)
