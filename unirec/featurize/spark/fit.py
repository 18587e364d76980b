"""Fit the plan's ops on Spark: vocabularies and statistics over the training window.

Each function below is the Spark twin of one op's ``fit``: it leaves the same ``state`` on
the op and the same rows in ``vocab`` / ``stats`` (inserted into features.duckdb), so the
entity-sized transform (``transform_sql``) and everything after it is shared. Ops without a
twin (id_sequence's unknown-id count, the text and image pools, plugin ops) fit with their
own DuckDB code on the entity tables, which featurize loads into features.duckdb anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.errors import ConfigError
from unirec.features.ops import OPS, Context, FeatureSpec, Op
from unirec.featurize.spark.session import spark_path
from unirec.store.layout import SIDES

SECTION_OF = {"user": "user_data", "item": "item_data"}


class SparkFit:
    """The raw fields as Spark columns: every entity, or the training window only."""

    def __init__(self, spark: Any, scratch: Path) -> None:
        self.spark, self.scratch = spark, scratch
        self._entities: dict[str, Any] = {}

    def entities(self, side: str) -> Any:
        if side not in self._entities:
            section = SECTION_OF[side]
            typed = self.spark.read.parquet(spark_path(self.scratch / "typed" / section))
            dropped = self.spark.read.parquet(spark_path(self.scratch / "dropped" / section))
            self._entities[side] = typed.join(dropped, "position", "left_anti")
        return self._entities[side]

    def values(self, spec: FeatureSpec) -> Any:
        """(key, value) for every entity, nulls included (Context.value_sql)."""
        from pyspark.sql import functions as F

        id_col = SIDES[spec.side].id
        return self.entities(spec.side).select(
            F.col(id_col).alias("key"), F.col(spec.group).getField(spec.field).alias("value"))

    def train_values(self, spec: FeatureSpec) -> Any:
        """The same, for entities with a training interaction (Context.train_value_sql)."""
        id_col = SIDES[spec.side].id
        train = self.spark.read.parquet(
            spark_path(self.scratch / f"train_{SIDES[spec.side].table}"))
        return self.values(spec).join(train.withColumnRenamed(id_col, "key"), "key",
                                      "left_semi")


def _categorify(op: Op, sf: SparkFit, ctx: Context, out: Path) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    p = op.spec.params
    vals = sf.train_values(op.spec)
    if p["multi"]:
        vals = vals.select("key", F.explode("value").alias("value"))
    vocab = (vals.where("value IS NOT NULL").groupBy("value").agg(F.count("*").alias("count"))
             .where(F.col("count") >= p["min_count"]))
    order = Window.orderBy(F.desc("count"), F.asc("value"))
    vocab.select("value", F.row_number().over(order).cast("int").alias("index"),
                 "count").write.mode("overwrite").parquet(str(out))
    from unirec.featurize.spark.run import parquet_scan

    ctx.add_vocab(op.spec, f"SELECT value, index, count FROM {parquet_scan(ctx.con, out)} "
                  "ORDER BY index")
    size = sf.spark.read.parquet(spark_path(out)).count()
    op.state = {"vocab_size": int(size) + 1}
    if p["multi"]:
        cut = sf.values(op.spec).where(F.size("value") > p["max_len"]).count()
        op.counts["truncated_rows"] = int(cut)


def _moments(df: Any, x: str, missing: str) -> dict[str, float]:
    row = df.selectExpr(f"avg({x})", f"stddev_pop({x})", f"min({x})", f"max({x})",
                        missing).first()
    mean, std, lo, hi, n_missing = row
    return {"mean": mean or 0.0, "std": std or 0.0, "min": lo or 0.0, "max": hi or 0.0,
            "missing": int(n_missing)}


def _normalize(op: Op, sf: SparkFit, ctx: Context, out: Path) -> None:
    transform = op.spec.params["transform"]
    x = "(sign(value) * ln(1 + abs(value)))" if transform == "log1p" else "value"
    row = _moments(sf.train_values(op.spec), x, "count(*) - count(value)")
    ctx.add_stats(op.spec, transform, row)
    op.state = {"stats": row}


def _float_sequence(op: Op, sf: SparkFit, ctx: Context, out: Path) -> None:
    from pyspark.sql import functions as F

    xs = (sf.train_values(op.spec).select(F.explode("value").alias("e"))
          .select(F.col("e").cast("double").alias("x")))
    row = _moments(xs, "x", "0")
    ctx.add_stats(op.spec, "standard", row)
    op.state = {"stats": row}


def _bucketize(op: Op, sf: SparkFit, ctx: Context, out: Path) -> None:
    n = op.spec.params["buckets"]
    qs = ", ".join(repr(i / n) for i in range(1, n))
    (edges,) = sf.train_values(op.spec).selectExpr(f"percentile(value, array({qs}))").first()
    edges = sorted({float(e) for e in edges or [] if e is not None})
    op.state = {"edges": edges, "vocab_size": len(edges) + 2}


SPARK_FITS: dict[str, Callable[[Op, SparkFit, Context, Path], None]] = {
    "categorify": _categorify, "normalize": _normalize, "float_sequence": _float_sequence,
    "bucketize": _bucketize,
}


class SparkFitter:
    """The Spark engine's ``fit`` for compile.compile_features: fits on Spark where a twin
    exists, then embeds the text and image pools on the executors (``embedded`` counts the
    vectors they computed, for the report)."""

    def __init__(self, spark: Any, scratch: Path, cfg: Config, cache_root: Path) -> None:
        self.spark, self.scratch, self.cfg, self.cache_root = spark, scratch, cfg, cache_root
        self.embedded: dict[str, int] = {}

    def __call__(self, con: duckdb.DuckDBPyConnection, specs: list[FeatureSpec],
                 base_dir: Path, frozen: dict[str, Any] | None = None) -> list[Op]:
        from unirec.featurize.compile import create_fit_tables
        from unirec.featurize.spark.embed import embed_on_executors

        if frozen is not None:
            raise ConfigError("--append runs on the DuckDB engine: drop --engine spark")
        create_fit_tables(con)
        ctx = Context(con, str(base_dir))
        sf = SparkFit(self.spark, self.scratch)
        ops = [OPS.get(spec.op)(spec) for spec in specs]
        for i, op in enumerate(ops):
            twin = SPARK_FITS.get(op.name)
            if twin is None:
                op.fit(ctx)
            else:
                twin(op, sf, ctx, self.scratch / "vocab" / str(i))
        con.execute("DROP TABLE IF EXISTS v_cur")
        self.embedded = embed_on_executors(self.spark, con, self.cfg, self.cache_root)
        return ops
