"""Normalize: continuous values -> scaled floats plus a missing flag."""

from __future__ import annotations

from typing import Any

from unirec.features.ops.base import Context, Op, Output
from unirec.features.ops.registry import OPS


def signed_log1p(x: str) -> str:
    """sign(x)·log1p(|x|): defined for negatives, monotone, tames heavy tails."""
    return f"(sign({x}) * ln(1 + abs({x})))"


@OPS.register("normalize")
class Normalize(Op):
    """Scale a number with statistics of the training window.

    ``standard``: (x − mean) / std; ``minmax``: (x − min) / (max − min); ``log1p``:
    signed log1p, then standard. A zero spread divides by 1. **Missing → 0** with
    ``.missing`` = 1, so a missing value is distinguishable from a mean one.
    """

    name = "normalize"
    accepts = ("DOUBLE",)

    def outputs(self) -> list[Output]:
        return [Output(self.spec.name, "float32"), Output(f"{self.spec.name}.missing",
                                                          "float32")]

    def _x(self) -> str:
        return signed_log1p("value") if self.spec.params["transform"] == "log1p" else "value"

    def fit(self, ctx: Context) -> None:
        row = ctx.fit_stats(self._x(), ctx.train_value_sql(self.spec))
        ctx.add_stats(self.spec, self.spec.params["transform"], row)
        self.state = {"stats": row}

    def extend(self, ctx: Context, previous: dict[str, Any]) -> None:
        """Frozen: the statistics the store was first fitted with."""
        self.state = {"stats": previous["stats"]}
        ctx.add_stats(self.spec, self.spec.params["transform"], previous["stats"])

    def transform_sql(self, ctx: Context) -> str:
        s = self.state["stats"]
        if self.spec.params["transform"] == "minmax":
            shift, scale = s["min"], (s["max"] - s["min"]) or 1.0
        else:
            shift, scale = s["mean"], s["std"] or 1.0
        return (f"SELECT key, coalesce(({self._x()} - {shift!r}) / {scale!r}, 0)::FLOAT "
                f"AS {self.col()}, (value IS NULL)::FLOAT AS {self.col('.missing')} "
                f"FROM ({ctx.value_sql(self.spec)})")
