"""The shards written by the executors, in parallel, byte-identical to the driver's.

``store.shards.write_shards`` streams one split of ``samples`` through one process in a
seeded order (``SHUFFLE_KEY``, DuckDB's hash of the position). Here each executor task
computes that very key with DuckDB on its rows, Spark sorts the split by it and numbers
the rows (``with_position``), so row ``k`` belongs to shard ``k // (block_size *
shard_blocks)``; the rows are then grouped by shard and each task writes its shards with
``store.shards.write_shard``. Shard ``i`` holds the rows the driver's writer would put
in it, so the files are the same bytes. The store must be on storage every executor
reaches (as the scratch Parquet is).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from unirec.featurize.spark.read import release, with_position
from unirec.featurize.spark.session import spark_path
from unirec.store.shards import FIELDS, SAMPLE_COLUMNS, SHUFFLE_KEY, write_shard

_ARROW = {"int32": "INT", "int64": "BIGINT", "float32": "FLOAT"}
_SCHEMA = ", ".join(f"{name} {_ARROW[dtype]}" for name, dtype in FIELDS.items())


def _keyed(seed: int, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The block columns plus ``key``, the shuffle key mapped onto BIGINT (order kept)."""
    con = duckdb.connect()
    key = SHUFFLE_KEY.replace("$seed", str(int(seed)))
    for batch in batches:
        con.register("samples", pa.Table.from_batches([batch]))
        yield from con.sql(
            f"SELECT ({key}::HUGEINT - 9223372036854775808)::BIGINT AS key, {SAMPLE_COLUMNS} "
            "FROM samples").to_arrow_table().to_batches()
        con.unregister("samples")


def _write(out_dir: str, split: str, rows: int, block_size: int, shard_blocks: int,
           batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """This task's shards (its rows sorted by their number ``k``)."""
    table = pa.Table.from_batches(list(batches))
    if not table.num_rows:
        return
    shard_of = table.column("k").to_numpy() // rows
    columns = {name: table.column(name).to_numpy().astype(dtype, copy=False)
               for name, dtype in FIELDS.items()}
    cuts = np.flatnonzero(np.diff(shard_of)) + 1
    written = []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(shard_of)], strict=True):
        index = int(shard_of[start])
        shard = {name: col[start:stop] for name, col in columns.items()}
        write_shard(Path(out_dir), split, index, shard, block_size, shard_blocks)
        written.append(index)
    yield pa.RecordBatch.from_pydict({"shard": written})


def write_shards_on_executors(spark: Any, scratch: Path, out_dir: Path, split: str, *,
                              block_size: int, shard_blocks: int, seed: int,
                              shuffle: bool) -> list[Path]:
    """``store.shards.write_shards`` for the samples Spark wrote under ``scratch``."""
    from pyspark.sql import functions as F

    rows = block_size * shard_blocks
    samples = spark.read.parquet(spark_path(scratch / "samples")).where(F.col("split") == split)
    keyed = samples.mapInArrow(lambda b, s=seed: _keyed(s, b), f"key BIGINT, {_SCHEMA}")
    ordered = keyed.orderBy("key", "position") if shuffle else keyed.orderBy("position")
    try:
        numbered = with_position(spark, ordered, "k")
        n = numbered.count()
        if not n:
            return []
        n_shards = math.ceil(n / rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = max(1, min(n_shards, spark.sparkContext.defaultParallelism * 4))
        grouped = (numbered.withColumn("shard", F.expr(f"k div {rows}"))
                   .repartitionByRange(parts, "shard").sortWithinPartitions("k"))
        target = str(out_dir.absolute())
        written = grouped.select("k", *FIELDS).mapInArrow(
            lambda b: _write(target, split, rows, block_size, shard_blocks, b),
            "shard BIGINT").collect()
    finally:
        release()
    indices = sorted(r[0] for r in written)
    if indices != list(range(n_shards)):  # each shard exactly once, or the store is wrong
        raise RuntimeError(f"{split} shards written by the executors: {indices}, expected "
                           f"0..{n_shards - 1}")
    return [out_dir / f"{split}-{i:06d}.tar" for i in indices]
