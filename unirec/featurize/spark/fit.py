"""Fit the plan's ops on Spark: vocabularies and statistics over the training window.

Each function below is the Spark twin of one op's ``fit``: it leaves the same ``state`` on
the op and the same rows in ``vocab`` / ``stats`` (inserted into features.duckdb), so the
entity-sized transform (``transform_sql``) and everything after it is shared. Vocabularies
are counted on Spark; for statistics and quantiles Spark selects the training window and
the op's own ``fit`` aggregates it in DuckDB (``_in_duckdb``: bit-equal sums). Ops without a
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
        """(key, value, position) for every entity, nulls included (Context.value_sql)."""
        from pyspark.sql import functions as F

        id_col = SIDES[spec.side].id
        return self.entities(spec.side).select(
            F.col(id_col).alias("key"), F.col(spec.group).getField(spec.field).alias("value"),
            "position")

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


class _WindowContext(Context):
    """The op's own Context, but its training window is the rows Spark selected."""

    def __init__(self, ctx: Context, table: str) -> None:
        super().__init__(ctx.con, ctx.base_dir, ctx.previous)
        self.table = table

    def train_value_sql(self, spec: FeatureSpec) -> str:
        return f"SELECT key, value FROM {self.table}"


def _in_duckdb(op: Op, sf: SparkFit, ctx: Context, out: Path) -> None:
    """Statistics (normalize, float_sequence) and bucket edges: Spark selects the training
    window's values (the join of every entity with the training interactions), DuckDB
    aggregates them with the op's own ``fit``. Floating-point sums depend on their order,
    and Spark's tree of partial aggregates sums in another order than DuckDB's scan (the
    moments then differ by ~1e-16, and every scaled feature with them): the values come
    back in entity position order, DuckDB's own table order, so the statistics are equal
    bit for bit. The values are entity-sized, which the driver's DuckDB holds anyway (the
    feature tables are compiled there)."""
    from unirec.featurize.spark.run import parquet_scan

    sf.train_values(op.spec).write.mode("overwrite").parquet(str(out))
    table = "_spark_window"
    ctx.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT key, value FROM "
                    f"{parquet_scan(ctx.con, out)} ORDER BY position")
    op.fit(_WindowContext(ctx, table))
    ctx.con.execute(f"DROP TABLE {table}")


SPARK_FITS: dict[str, Callable[[Op, SparkFit, Context, Path], None]] = {
    "categorify": _categorify, "normalize": _in_duckdb, "float_sequence": _in_duckdb,
    "bucketize": _in_duckdb,
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
