"""Split, per-user sequences, samples and popularity on Spark, as split.py / samples.py.

The rules are the DuckDB engine's, often its very SQL (``_sizes_sql``, ``_weight_sql``,
``_keep_sql``, which Spark SQL parses as is). The sequence CSR is built without the
single sorted scan DuckDB uses: a row's offset in its user's list is its rank by (time,
position); the user's ``start`` is a running sum of user sizes (one small array on the
driver); ``history_end`` is ``start`` plus the rank of the first row at the same time, which
is the tie rule (interactions at one time never see each other).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from unirec.config import Config
from unirec.errors import DataError
from unirec.featurize.samples import _keep_sql, _weight_sql
from unirec.featurize.spark.read import with_position
from unirec.featurize.spark.session import spark_path
from unirec.featurize.split import SPLITS, _sizes_sql, slice_sizes


def _view(spark: Any, path: Path, name: str) -> Any:
    df = spark.read.parquet(spark_path(path))
    df.createOrReplaceTempView(name)
    return df


def _time_sql(spark: Any) -> tuple[str, bool]:
    """split._time_expr: the ordering time, synthetic (position seconds) when absent."""
    total, timed = spark.sql("SELECT count(*), count(timestamp) FROM u_interactions").first()
    if timed == 0:
        return "CAST(timestamp_seconds(i.position) AS TIMESTAMP_NTZ)", True
    if timed != total:
        raise DataError(
            f"{total - timed} interactions have no timestamp while others have one; a time "
            "split needs every time (use --on-bad-timestamp=drop to skip them)",
            section="interactions", field="timestamp")
    return "CAST(i.timestamp AS TIMESTAMP_NTZ)", False


def assign_splits(spark: Any, scratch: Path, cfg: Config) -> dict[str, Any]:
    """``split_interactions`` (Parquet under scratch) and the report's split summary."""
    sc = cfg.split
    _view(spark, scratch / "interactions", "u_interactions")
    _view(spark, scratch / "user_map", "u_user_map")
    _view(spark, scratch / "item_map", "u_item_map")
    time_sql, synthetic = _time_sql(spark)
    tf = sc.test_fraction if sc.strategy != "none" else 0.0
    vf = sc.val_fraction
    spark.sql(
        "SELECT CAST(i.position AS BIGINT) AS position, CAST(u.user_index AS INT) AS "
        f"user_index, CAST(m.item_index AS INT) AS item_index, {time_sql} AS time, "
        "CAST(i.interaction_type AS STRING) AS interaction_type, "
        "CAST(i.weight AS DOUBLE) AS weight FROM u_interactions i "
        "JOIN u_user_map u ON i.user_id = u.user_id JOIN u_item_map m ON i.item_id = m.item_id"
    ).createOrReplaceTempView("u_source")
    cuts: dict[str, str | None] = {}
    if sc.strategy == "global-time":
        split_sql, cuts = _global_cuts(spark, tf, vf)
        select = f"SELECT *, {split_sql} AS split FROM u_source"
    else:
        n_test, n_val = _sizes_sql("n", tf, vf)
        small = f"n < {int(sc.min_user_interactions)}"
        select = (
            "SELECT position, user_index, item_index, time, interaction_type, weight, "
            f"CASE WHEN {small} THEN 'train' WHEN rk > n - ({n_test}) THEN 'test' "
            f"WHEN rk > n - ({n_test}) - ({n_val}) THEN 'val' ELSE 'train' END AS split "
            "FROM (SELECT *, row_number() OVER (PARTITION BY user_index ORDER BY time, "
            "position) AS rk, count(*) OVER (PARTITION BY user_index) AS n FROM u_source)")
    spark.sql(select).write.mode("overwrite").parquet(str(scratch / "split_interactions"))
    _view(spark, scratch / "split_interactions", "u_split")
    return _summary(spark, sc.strategy, synthetic, cuts)


def _global_cuts(spark: Any, tf: float, vf: float) -> tuple[str, dict[str, str | None]]:
    """split._global_cuts: the time at a global offset, ties at a cut to the later split."""
    from unirec.errors import ConfigError

    if tf + vf >= 1:
        raise ConfigError(
            f"split.test_fraction + split.val_fraction = {tf + vf:g}: a global-time split "
            "needs them below 1 to leave a training window")
    n = spark.table("u_source").count()
    n_test, n_val = slice_sizes(n, tf, vf)
    ranked = with_position(spark, spark.table("u_source").select("time").orderBy("time"), "k")
    cuts: dict[str, str | None] = {"val": None, "test": None}
    cases = []
    for name, size, offset in (("test", n_test, n - n_test), ("val", n_val, n - n_test - n_val)):
        if size:
            us, iso = ranked.filter(f"k = {int(offset)}").selectExpr(
                "unix_micros(CAST(time AS TIMESTAMP))",
                "date_format(time, \"yyyy-MM-dd'T'HH:mm:ss.SSSSSS\")").first()
            cuts[name] = iso
            cases.append(f"WHEN time >= CAST(timestamp_micros({int(us)}) AS TIMESTAMP_NTZ) "
                         f"THEN '{name}'")
    expr = f"CASE {' '.join(cases)} ELSE 'train' END" if cases else "'train'"
    return expr, cuts


def _summary(spark: Any, strategy: str, synthetic: bool, cuts: dict[str, str | None]
             ) -> dict[str, Any]:
    got = {r[0]: r[1] for r in spark.sql(
        "SELECT split, count(*) FROM u_split GROUP BY split").collect()}
    users = spark.sql(
        "SELECT count(DISTINCT user_index), "
        "count(DISTINCT CASE WHEN split = 'val' THEN user_index END), "
        "count(DISTINCT CASE WHEN split = 'test' THEN user_index END) FROM u_split").first()
    summary: dict[str, Any] = {
        "strategy": strategy, "synthetic_time": synthetic,
        "counts": {s: int(got.get(s, 0)) for s in SPLITS},
        "users": int(users[0]), "users_with_val": int(users[1]),
        "users_with_test": int(users[2]),
    }
    if strategy == "global-time":
        summary["cut_times"] = cuts
    return summary


def build_samples(spark: Any, scratch: Path, cfg: Config, n_users: int) -> dict[str, Any]:
    """``user_sequences``, ``samples`` and ``item_popularity`` as Parquet under scratch."""
    from pyspark.sql import functions as F

    sc = cfg.samples
    h = int(sc.history_length)
    rows = spark.sql(
        f"SELECT split, user_index, item_index, time, {_weight_sql(sc)} AS weight, "
        f"{_keep_sql(sc)} AS kept, position, "
        "row_number() OVER (PARTITION BY user_index ORDER BY time, position) - 1 AS rk "
        "FROM u_split")
    rows = rows.withColumn("earlier", F.expr(
        "min(rk) OVER (PARTITION BY user_index, time)"))
    rows.write.mode("overwrite").parquet(str(scratch / "ranked"))
    rows = _view(spark, scratch / "ranked", "u_ranked")
    sizes = spark.sql("SELECT user_index, count(*) AS n, count_if(split <> 'test') AS serve "
                      "FROM u_ranked GROUP BY user_index").toArrow()
    counts = np.zeros(n_users + 1, np.int64)
    serve = np.zeros(n_users + 1, np.int64)
    idx = sizes.column("user_index").to_numpy().astype(np.int64)
    counts[idx] = sizes.column("n").to_numpy()
    serve[idx] = sizes.column("serve").to_numpy()
    offsets = np.zeros(n_users + 2, np.int64)
    np.cumsum(counts, out=offsets[1:])
    path = scratch / "user_offsets"
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "user_index": np.arange(1, n_users + 1, dtype=np.int32), "start": offsets[1:-1],
        "length": counts[1:], "serve_length": serve[1:]}), path / "part-0.parquet")
    users = spark.read.parquet(spark_path(path))
    users.createOrReplaceTempView("u_users")
    spark.sql(
        "SELECT u.user_index, u.start, u.length, u.serve_length, "
        "coalesce(transform(s.seq, x -> x.item_index), array()) AS items, "
        "coalesce(transform(s.seq, x -> x.time), array()) AS times FROM u_users u LEFT JOIN "
        "(SELECT user_index, array_sort(collect_list(struct(rk, item_index, time))) AS seq "
        "FROM u_ranked GROUP BY user_index) s ON u.user_index = s.user_index"
    ).write.mode("overwrite").parquet(str(scratch / "user_sequences"))
    spark.sql(
        "SELECT r.split, r.user_index, r.item_index, r.time, r.weight, "
        "CAST(u.start + r.earlier AS BIGINT) AS history_end, "
        f"CAST(least(r.earlier, {h}) AS INT) AS history_length, r.position "
        "FROM u_ranked r JOIN u_users u ON r.user_index = u.user_index "
        "WHERE r.kept AND r.weight > 0").write.mode("overwrite").parquet(
            str(scratch / "samples"))
    samples = _view(spark, scratch / "samples", "u_samples")
    spark.sql(
        "SELECT m.item_index, CAST(coalesce(p.n, 0) AS BIGINT) AS train_count, "
        "CAST(coalesce(p.w, 0) AS DOUBLE) AS train_weight FROM u_item_map m LEFT JOIN "
        "(SELECT item_index, count(*) AS n, sum(CAST(weight AS DOUBLE)) AS w FROM u_samples "
        "WHERE split = 'train' GROUP BY item_index) p ON m.item_index = p.item_index"
    ).write.mode("overwrite").parquet(str(scratch / "item_popularity"))
    dropped = spark.sql("SELECT count_if(NOT kept), count_if(kept AND weight = 0) "
                        "FROM u_ranked").first()
    got = {r[0]: (int(r[1]), float(r[2] or 0.0)) for r in samples.groupBy("split").agg(
        F.count("*"), F.avg("history_length")).collect()}
    return {
        "counts": {s: got.get(s, (0, 0.0))[0] for s in SPLITS},
        "dropped": {"filtered_type": int(dropped[0]), "zero_weight": int(dropped[1])},
        "history_length": h,
        "mean_train_history": got.get("train", (0, 0.0))[1],
    }


def train_windows(spark: Any, scratch: Path) -> None:
    """compile.create_train_window: entity ids with a training interaction."""
    for side, id_col in (("user", "user_id"), ("item", "item_id")):
        spark.sql(f"SELECT DISTINCT m.{id_col} FROM u_split s JOIN u_{side}_map m "
                  f"ON s.{side}_index = m.{side}_index WHERE s.split = 'train'"
                  ).write.mode("overwrite").parquet(str(scratch / f"train_{side}s"))
