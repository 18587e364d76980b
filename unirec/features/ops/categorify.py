"""Categorify: categorical values -> vocabulary indices."""

from __future__ import annotations

from typing import Any

from unirec.features.ops.base import Context, Op, Output
from unirec.features.ops.registry import OPS
from unirec.store.sql import literal


@OPS.register("categorify")
class Categorify(Op):
    """Map each value to an index by training-window frequency.

    Reserved index: **0 = out of vocabulary or missing** (a value never seen in the training
    window, seen fewer than ``min_count`` times, or null). Indices 1..V follow descending
    count, ties by value, so the vocabulary is deterministic. A multi-valued field (a list,
    e.g. genres) becomes ``max_len`` indices, padded with 0 after the values, plus a
    ``.length`` column; values beyond ``max_len`` are cut (counted in the manifest).
    """

    name = "categorify"
    accepts = ("VARCHAR", "VARCHAR[]")

    @property
    def multi(self) -> bool:
        return self.spec.params["multi"]

    def outputs(self) -> list[Output]:
        if not self.multi:
            return [Output(self.spec.name, "int32")]
        n = self.spec.params["max_len"]
        return [Output(self.spec.name, "int32", (n,)), Output(f"{self.spec.name}.length",
                                                               "int32")]

    def _values(self, source: str) -> str:
        if self.multi:
            return f"SELECT key, unnest(value) AS value FROM ({source})"
        return f"SELECT key, value FROM ({source}) WHERE value IS NOT NULL"

    def _counted(self, ctx: Context) -> str:
        """(value, count) over the training window, values reaching ``min_count``."""
        return (f"SELECT value, count(*) AS count FROM "
                f"({self._values(ctx.train_value_sql(self.spec))}) WHERE value IS NOT NULL "
                f"GROUP BY value HAVING count(*) >= {self.spec.params['min_count']}")

    def fit(self, ctx: Context) -> None:
        ctx.con.execute(
            f"CREATE OR REPLACE TEMP TABLE v_cur AS SELECT value, CAST(row_number() OVER "
            f"(ORDER BY count DESC, value) AS INTEGER) AS index, count "
            f"FROM ({self._counted(ctx)})")
        self._finish(ctx)

    def extend(self, ctx: Context, previous: dict[str, Any]) -> None:
        """The store's values keep their indices; values new to the training window (or
        reaching ``min_count`` only now) get the next ones, by the same count order."""
        old = (f"(SELECT value, index FROM {ctx.previous}.vocab "
               f"WHERE field = {literal(self.spec.key)})")
        ctx.con.execute(
            f"CREATE OR REPLACE TEMP TABLE v_cur AS SELECT o.value, o.index, "
            f"coalesce(c.count, 0) AS count FROM {old} o LEFT JOIN ({self._counted(ctx)}) c "
            f"USING (value) UNION ALL SELECT value, CAST((SELECT coalesce(max(index), 0) "
            f"FROM {old}) + row_number() OVER (ORDER BY count DESC, value) AS INTEGER), count "
            f"FROM ({self._counted(ctx)}) WHERE value NOT IN (SELECT value FROM {old})")
        self._finish(ctx)

    def _finish(self, ctx: Context) -> None:
        ctx.add_vocab(self.spec, "SELECT value, index, count FROM v_cur")
        size, = ctx.fetch_one("SELECT count(*) FROM v_cur")
        self.state = {"vocab_size": int(size) + 1}  # + the 0 row
        if self.multi:
            cut, = ctx.fetch_one(f"SELECT count(*) FROM ({ctx.value_sql(self.spec)}) "
                                 f"WHERE len(value) > {self.spec.params['max_len']}")
            self.counts["truncated_rows"] = int(cut)

    def transform_sql(self, ctx: Context) -> str:
        vocab = f"(SELECT value, index FROM vocab WHERE field = {literal(self.spec.key)})"
        src = ctx.value_sql(self.spec)
        if not self.multi:
            return (f"SELECT s.key, coalesce(v.index, 0)::INTEGER AS {self.col()} "
                    f"FROM ({src}) s LEFT JOIN {vocab} v ON s.value = v.value")
        n = self.spec.params["max_len"]
        return (
            f"SELECT s.key, list_resize(coalesce(e.idx, []::INTEGER[]), {n}, 0) AS {self.col()}, "
            f"least(coalesce(len(e.idx), 0), {n})::INTEGER AS {self.col('.length')} "
            f"FROM ({src}) s LEFT JOIN (SELECT u.key, list(coalesce(v.index, 0)::INTEGER "
            f"ORDER BY u.ord) AS idx FROM (SELECT key, unnest(value) AS value, "
            f"generate_subscripts(value, 1) AS ord FROM ({src})) u LEFT JOIN {vocab} v "
            f"ON u.value = v.value GROUP BY u.key) e ON s.key = e.key"
        )
