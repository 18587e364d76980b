"""The Spark engine's stages up to the compile, leaving features.duckdb as DuckDB's do.

After ``spark_stages`` the connection holds what ``build_raw_tables``, ``assign_splits``,
``build_samples`` and ``create_train_window`` leave on the DuckDB engine: ``users``,
``items``, ``interactions``, ``user_map``, ``item_map``, ``user_sequences``, ``samples``,
``item_popularity``, the view ``sample_history`` and the TEMP ``train_users`` /
``train_items``; Spark's Parquet is loaded with explicit types, so both engines' tables
have one schema. The scratch folder lives inside the building store (the store must be on
storage every executor reaches) and is removed before the swap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.features.ops import Op
from unirec.featurize.compile import create_index_maps
from unirec.featurize.samples import SAMPLE_HISTORY_VIEW
from unirec.featurize.spark.fit import SparkFitter
from unirec.featurize.spark.read import (
    match_interactions,
    raw_report,
    read_sources,
    release,
    validate_sections,
)
from unirec.featurize.spark.session import spark_session
from unirec.featurize.spark.tables import assign_splits, build_samples, train_windows
from unirec.store.layout import SECTION_TABLES, SECTIONS
from unirec.store.shards import shard_summary

SCRATCH = ".spark"


def parquet_scan(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """A name DuckDB can scan for the Parquet folder ``path`` (an Arrow dataset, streamed;
    Spark's ``_SUCCESS`` and ``.crc`` files skipped). DuckDB's ``read_parquet`` would take
    ``[]`` in a store's name for a glob."""
    import pyarrow.dataset as ds

    name = "_pq_" + re.sub(r"\W", "_", "_".join(path.relative_to(path.parents[1]).parts))
    con.execute("SELECT 1").fetchall()  # register refuses while a fetchone() result is open
    con.register(name, ds.dataset(str(path), format="parquet"))
    return name


def _load(con: duckdb.DuckDBPyConnection, scratch: Path) -> None:
    """users / items / interactions from Spark's output, typed as the DuckDB engine's."""
    _parquet = lambda path: parquet_scan(con, path)  # noqa: E731
    for section in ("user_data", "item_data"):
        con.execute(
            f"CREATE TABLE {SECTION_TABLES[section]} AS SELECT * FROM "
            f"{_parquet(scratch / 'typed' / section)} WHERE position NOT IN "
            f"(SELECT position FROM {_parquet(scratch / 'dropped' / section)}) ORDER BY position")
    con.execute(
        "CREATE TABLE interactions AS SELECT position::BIGINT AS position, user_id, item_id, "
        "interaction_type::VARCHAR AS interaction_type, timestamp::TIMESTAMP AS timestamp, "
        "weight::DOUBLE AS weight, rating::DOUBLE AS rating FROM "
        f"{_parquet(scratch / 'interactions')} ORDER BY position")


def _load_samples(con: duckdb.DuckDBPyConnection, scratch: Path) -> None:
    _parquet = lambda path: parquet_scan(con, path)  # noqa: E731
    con.execute(
        "CREATE OR REPLACE TABLE user_sequences AS SELECT user_index::INTEGER AS user_index, "
        "start::BIGINT AS start, length::BIGINT AS length, serve_length::BIGINT AS "
        "serve_length, items::INTEGER[] AS items, times::TIMESTAMP[] AS times FROM "
        f"{_parquet(scratch / 'user_sequences')} ORDER BY user_index")
    con.execute(
        "CREATE OR REPLACE TABLE samples AS SELECT split::VARCHAR AS split, user_index::INTEGER "
        "AS user_index, item_index::INTEGER AS item_index, time::TIMESTAMP AS time, "
        "weight::FLOAT AS weight, history_end::BIGINT AS history_end, "
        "history_length::INTEGER AS history_length, position::BIGINT AS position FROM "
        f"{_parquet(scratch / 'samples')}")
    con.execute(SAMPLE_HISTORY_VIEW)
    con.execute(
        "CREATE OR REPLACE TABLE item_popularity AS SELECT item_index::INTEGER AS item_index, "
        "train_count::BIGINT AS train_count, train_weight::DOUBLE AS train_weight FROM "
        f"{_parquet(scratch / 'item_popularity')} ORDER BY item_index")
    for side, id_col in (("users", "user_id"), ("items", "item_id")):
        con.execute(f"CREATE TEMP TABLE train_{side} AS SELECT {id_col} FROM "
                    f"{_parquet(scratch / f'train_{side}')}")


def spark_stages(con: duckdb.DuckDBPyConnection, data: Path | str, cfg: Config, tmp: Path,
                 stage: Callable[[str], None]) -> tuple[dict[str, Any], Callable[..., list[Op]]]:
    """Raw tables, split and samples on Spark; returns the report and the ops' fit."""
    spark = spark_session(cfg.spark)
    try:
        return _stages(spark, con, data, cfg, tmp, stage)
    finally:
        release()


def _stages(spark: Any, con: duckdb.DuckDBPyConnection, data: Path | str, cfg: Config,
            tmp: Path, stage: Callable[[str], None]
            ) -> tuple[dict[str, Any], Callable[..., list[Op]]]:
    scratch = (tmp / SCRATCH).absolute()
    sources, digest = read_sources(spark, data, scratch, cfg.spark.partitions)
    stage("validate")
    seen = {s: df.count() for s, (_, df) in sources.items()}
    findings = validate_sections(sources, scratch, cfg)
    match_interactions(spark, sources, scratch, cfg, findings)
    _load(con, scratch)
    kept = {s: con.execute(f"SELECT count(*) FROM {SECTION_TABLES[s]}").fetchone()[0]
            for s in SECTIONS}
    report = raw_report(data, digest, seen, kept, findings)
    stage("split")
    create_index_maps(con)
    for name in ("user_map", "item_map"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
        target = str(scratch / name / "part-0.parquet").replace("'", "''")
        con.execute(f"COPY {name} TO '{target}' (FORMAT parquet)")
    report["split"] = assign_splits(spark, scratch, cfg)
    stage("samples")
    n_users = con.execute("SELECT count(*) FROM user_map").fetchone()[0]
    report["samples"] = build_samples(spark, scratch, cfg, int(n_users))
    train_windows(spark, scratch)
    _load_samples(con, scratch)
    return report, SparkFitter(spark, scratch, cfg, tmp / "cache")


def executor_shards(cfg: Config, tmp: Path) -> Callable[..., dict[str, Any]]:
    """``store.shards.write_split`` without the connection: the executors write the shards
    from the samples Spark left under ``tmp``'s scratch folder (``spark.shards``); their
    counts are read back from the headers (``shard_summary``)."""
    from unirec.featurize.spark.shards import write_shards_on_executors

    spark = spark_session(cfg.spark)
    scratch = (tmp / SCRATCH).absolute()

    def write(out_dir: Path, split: str, **kw: Any) -> dict[str, Any]:
        paths = write_shards_on_executors(spark, scratch, out_dir, split, **kw)
        return {"paths": paths, **shard_summary(paths)}
    return write
