"""Bucketize: continuous values -> quantile bucket indices, one learnt embedding per bucket."""

from __future__ import annotations

from typing import Any

from unirec.features.ops.base import Context, Op, Output
from unirec.features.ops.registry import OPS


@OPS.register("bucketize")
class Bucketize(Op):
    """Cut a number at the ``buckets``-quantiles of the training window.

    Why: ``normalize`` feeds the value through a linear projection, so the model can only
    learn effects that are monotone in it; popularity by release year is not (MovieLens:
    the 1990s are most watched, old classics again more than the 1970s-80s). A bucket
    embedding learns any shape. Reserved index: **0 = missing**; buckets 1..B in value order
    (a value below the first edge is bucket 1, at or above the last edge bucket B). Edges are
    the distinct quantiles, so a field with few values gets fewer buckets.
    """

    name = "bucketize"
    accepts = ("DOUBLE",)

    def outputs(self) -> list[Output]:
        return [Output(self.spec.name, "int32")]

    def fit(self, ctx: Context) -> None:
        n = self.spec.params["buckets"]
        qs = [i / n for i in range(1, n)]
        (edges,) = ctx.fetch_one(f"SELECT quantile_cont(value, {qs}) FROM "
                                 f"({ctx.train_value_sql(self.spec)})")
        edges = sorted({float(e) for e in edges or [] if e is not None})
        self.state = {"edges": edges, "vocab_size": len(edges) + 2}  # + missing, + last

    def extend(self, ctx: Context, previous: dict[str, Any]) -> None:
        """Frozen: the store's bucket edges (its embedding rows keep their meaning)."""
        self.state = {"edges": previous["edges"], "vocab_size": previous["vocab_size"]}

    def transform_sql(self, ctx: Context) -> str:
        above = "".join(f" + (value >= {e!r})::INTEGER" for e in self.state["edges"])
        return (f"SELECT key, (CASE WHEN value IS NULL THEN 0 ELSE 1{above} END)::INTEGER "
                f"AS {self.col()} FROM ({ctx.value_sql(self.spec)})")
