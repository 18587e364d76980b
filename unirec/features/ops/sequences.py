"""Temporal lists: item-id sequences over the shared item table, and float sequences."""

from __future__ import annotations

from typing import Any

from unirec.features.ops.base import Context, Op, Output, pad_left_sql
from unirec.features.ops.registry import OPS


@OPS.register("id_sequence")
class IdSequence(Op):
    """A list of item ids (oldest first) -> item indices, most recent last.

    Shares the item index (``item_map``), so the model reads these through the same item
    table as everything else. Reserved index: **0 = padding or an id not in item_data**
    (counted as ``unknown_ids``). Keeps the last ``max_len`` entries, left-padded with 0,
    plus ``.length``.
    """

    name = "id_sequence"
    accepts = ("VARCHAR[]", "BIGINT[]")

    def outputs(self) -> list[Output]:
        n = self.spec.params["max_len"]
        return [Output(self.spec.name, "int32", (n,)), Output(f"{self.spec.name}.length",
                                                               "int32")]

    def _mapped(self, ctx: Context) -> str:
        return (
            f"SELECT u.key, list(coalesce(m.item_index, 0)::INTEGER ORDER BY u.ord) AS seq "
            f"FROM (SELECT key, unnest(value)::VARCHAR AS value, generate_subscripts(value, 1) "
            f"AS ord FROM ({ctx.value_sql(self.spec)})) u LEFT JOIN item_map m "
            f"ON u.value = m.item_id::VARCHAR GROUP BY u.key"
        )

    def fit(self, ctx: Context) -> None:
        unknown, = ctx.fetch_one(
            f"SELECT count(*) FROM (SELECT unnest(value)::VARCHAR AS v FROM "
            f"({ctx.value_sql(self.spec)})) WHERE v NOT IN (SELECT item_id::VARCHAR FROM items)"
        )
        self.counts = {"unknown_ids": int(unknown)}

    def transform_sql(self, ctx: Context) -> str:
        n = self.spec.params["max_len"]
        seq = "coalesce(e.seq, []::INTEGER[])"
        return (f"SELECT s.key, {pad_left_sql(seq, n)} AS {self.col()}, "
                f"least(len({seq}), {n})::INTEGER AS {self.col('.length')} "
                f"FROM ({ctx.value_sql(self.spec)}) s LEFT JOIN ({self._mapped(ctx)}) e "
                f"ON s.key = e.key")


@OPS.register("float_sequence")
class FloatSequence(Op):
    """A list of numbers (oldest first) -> standardised floats, most recent last.

    Statistics over every element of training-window entities. **0 = padding**; keeps the
    last ``max_len`` values, left-padded, plus ``.length`` (so a real 0 is told apart).
    """

    name = "float_sequence"
    accepts = ("DOUBLE[]", "BIGINT[]")

    def outputs(self) -> list[Output]:
        n = self.spec.params["max_len"]
        return [Output(self.spec.name, "float32", (n,)), Output(f"{self.spec.name}.length",
                                                                 "int32")]

    def fit(self, ctx: Context) -> None:
        row = {**ctx.fit_stats("x", "SELECT unnest(value)::DOUBLE AS x FROM "
                                    f"({ctx.train_value_sql(self.spec)})"), "missing": 0}
        ctx.add_stats(self.spec, "standard", row)
        self.state = {"stats": row}

    def extend(self, ctx: Context, previous: dict[str, Any]) -> None:
        """Frozen: the statistics the store was first fitted with."""
        self.state = {"stats": previous["stats"]}
        ctx.add_stats(self.spec, "standard", previous["stats"])

    def transform_sql(self, ctx: Context) -> str:
        n = self.spec.params["max_len"]
        s = self.state["stats"]
        scaled = (f"list_transform(list_slice(coalesce(value, []), -{n}, -1), lambda x: "
                  f"((x - {s['mean']!r}) / {s['std'] or 1.0!r})::FLOAT)")
        return (f"SELECT key, {pad_left_sql(scaled, n, 'FLOAT')} AS {self.col()}, "
                f"least(len(coalesce(value, [])), {n})::INTEGER AS {self.col('.length')} "
                f"FROM ({ctx.value_sql(self.spec)})")
