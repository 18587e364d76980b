"""The raw tables on Spark: positions, the three validation passes, drop policies.

Writes, under ``scratch``: ``src/<section>`` (pos, rec JSON text), ``typed/<section>``
(one Parquet file per partition, written by DuckDB on the executor), and for entities
``dropped/<section>`` (positions of duplicate records dropped by on_duplicate_id=first),
and ``interactions`` (the matched, typed interactions). Counts land in the report exactly
as raw.build_raw_tables writes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from unirec.config import Config
from unirec.errors import DataError
from unirec.features.profile import build_profile
from unirec.features.validate import INTERACTION_FIELDS, Findings, bad_timestamp_reason
from unirec.featurize.spark import ingest
from unirec.featurize.spark.session import spark_path
from unirec.featurize.spark.uri import input_files, input_path
from unirec.store.layout import SECTION_TABLES, SECTIONS, SIDE_OF_SECTION
from unirec.version import __version__

_PERSISTED: list[Any] = []


def release() -> None:
    """Unpersist what ``with_position`` cached (the session may be a notebook's)."""
    while _PERSISTED:
        _PERSISTED.pop().unpersist()


def with_position(spark: Any, df: Any, name: str = "pos") -> Any:
    """``df`` plus its 0-based row number in the current order, computed in the JVM: the
    row's place in its partition plus the sizes of the partitions before it. The tagged
    rows are cached, so a sort is not redone between counting and numbering."""
    from pyspark.sql import functions as F

    tagged = df.select(F.spark_partition_id().alias("_pid"),
                       F.monotonically_increasing_id().alias("_mid"), "*").persist()
    _PERSISTED.append(tagged)
    sizes = sorted((r[0], r[1]) for r in tagged.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid, n in sizes:
        offsets.append((pid, total - (pid << 33)))
        total += n
    shift = spark.createDataFrame(offsets or [(0, 0)], "_pid INT, _off BIGINT")
    out = tagged.join(F.broadcast(shift), "_pid")
    cols = [c for c in df.columns]
    return out.select((F.col("_mid") + F.col("_off")).alias(name), *cols)


def _to_json(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Parquet rows -> (pos, rec) with DuckDB's to_json, as the DuckDB engine reads them."""
    for batch in batches:
        con = duckdb.connect()
        con.register("_b", pa.Table.from_batches([batch]))
        names = [n for n in batch.schema.names if n != "pos"]
        packed = ", ".join('"{0}" := "{0}"'.format(n.replace('"', '""')) for n in names)
        table = con.sql(f"SELECT pos::BIGINT AS pos, to_json(struct_pack({packed}))::VARCHAR "
                        "AS rec FROM _b").to_arrow_table()
        yield from table.to_batches()


def read_sources(spark: Any, data: Path | str, scratch: Path, partitions: int
                 ) -> tuple[dict[str, tuple[str, Any]], str | None]:
    """Each section as (file name, DataFrame(pos BIGINT, rec STRING)), positions as
    DuckDB's; and the sha256 of a URI's listing (``uri.input_files``)."""
    from pyspark.sql import functions as F

    out = {}
    files, digest = input_files(spark, data)
    for section, (name, location) in files.items():
        if name.endswith(".parquet"):
            rows = with_position(spark, spark.read.parquet(location))
            src = rows.mapInArrow(_to_json, "pos BIGINT, rec STRING")
        else:
            # blank lines are not records (DuckDB's reader skips whitespace-only lines)
            lines = spark.read.text(location).filter(F.col("value").rlike(r"\S"))
            src = with_position(spark, lines).select("pos", F.col("value").alias("rec"))
        path = scratch / "src" / section
        src.write.mode("overwrite").parquet(str(path))
        df = spark.read.parquet(spark_path(path))
        if partitions:
            df = df.repartition(partitions)
        out[section] = (name, df)
    return out, digest


def _run_pass(df: Any, fn: Callable[[list[pa.RecordBatch]], dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """Run ``fn`` on every partition's records; the partitions' JSON results."""
    from pyspark import TaskContext

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx else 0
        yield ingest.encode(fn(list(batches), part))

    results = [json.loads(r[0]) for r in df.mapInArrow(per_partition, "result STRING")
               .collect()]
    return results or [fn([], 0)]


def validate_sections(sources: dict[str, tuple[str, Any]], scratch: Path, cfg: Config
                      ) -> Findings:
    """Passes 1-3 for every section, in the DuckDB engine's order; typed Parquet out."""
    findings = Findings()
    structure = {}
    for section, (name, df) in sources.items():  # unreadable input first, as DuckDB reads
        res = _run_pass(df, lambda b, _, s=section, n=name: ingest.structure_pass(s, n, b))
        ingest.first_error([r for r in res if r.get("error", {}).get("rank", [0])[0] == -1])
        structure[section] = res
    empty = cfg.validate_.empty_string_is_missing
    for section, (_, df) in sources.items():
        witnesses = {p: r for res in structure[section] for p, r in res["witnesses"]}
        fields = ingest.structure_check(section, witnesses)
        res = _run_pass(df, lambda b, _, s=section, f=fields: ingest.types_pass(s, f, b))
        types = ingest.merge_types([r["types"] for r in res])
        elements = ingest.merge_types([r["elements"] for r in res])
        for r in res:
            witnesses.update({p: w for p, w in r["witnesses"]})
        out = scratch / "typed" / section
        args = (section, fields, types, elements, witnesses, empty, out)
        res = _run_pass(df, lambda b, part, a=args: ingest.typing_pass(*a, part, b))
        ingest.first_error(res)
        findings.warnings += ingest.merge_warnings(res)
        if section != "interactions":
            _check_duplicates(df.sparkSession, section, out, scratch, cfg, findings)
    return findings


def _check_duplicates(spark: Any, section: str, typed: Path, scratch: Path, cfg: Config,
                      findings: Findings) -> None:
    """raw._entity_table's duplicate rule; the dropped positions go to ``dropped/``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    id_name = SIDE_OF_SECTION[section].id
    ent = spark.read.parquet(spark_path(typed)).select(id_name, "position")
    dup = (ent.withColumn("first", F.min("position").over(Window.partitionBy(id_name)))
           .filter("position > first"))
    dup.select("position").write.mode("overwrite").parquet(str(scratch / "dropped" / section))
    dup = spark.read.parquet(spark_path(scratch / "dropped" / section))
    n = dup.count()
    if not n:
        return
    if cfg.validate_.on_duplicate_id == "error":
        first = (ent.withColumn("first", F.min("position").over(Window.partitionBy(id_name)))
                 .filter("position > first").orderBy("position").first())
        raise DataError(
            f"duplicate {id_name} {first[id_name]!r}: {section}[{first['first']}] has it too "
            f"(duplicate records: {n}; use --on-duplicate-id=first to keep the first)",
            section=section, position=first["position"], field=id_name)
    findings.drop(section, "duplicate_id", n)


def _entity_keys(spark: Any, scratch: Path, section: str) -> Any:
    """Kept entity ids with their text form (interactions match ids as text)."""
    from pyspark.sql import functions as F

    id_name = SIDE_OF_SECTION[section].id
    ent = spark.read.parquet(spark_path(scratch / "typed" / section)).select(id_name, "position")
    dropped = spark.read.parquet(spark_path(scratch / "dropped" / section))
    return (ent.join(dropped, "position", "left_anti")
            .select(id_name, F.col(id_name).cast("string").alias("_key")))


def match_interactions(spark: Any, sources: dict[str, tuple[str, Any]], scratch: Path,
                       cfg: Config, findings: Findings) -> None:
    """raw._interactions_table on Spark: unknown ids and timestamps by policy, then the
    typed ``interactions`` (position, user_id, item_id, ...) to ``scratch/interactions``."""
    from pyspark.sql import functions as F

    stage = spark.read.parquet(spark_path(scratch / "typed" / "interactions"))
    policy = cfg.validate_
    keys = {}
    for side, section, key, flag in (("user", "user_data", "user_id", policy.on_unknown_user),
                                     ("item", "item_data", "item_id", policy.on_unknown_item)):
        keys[side] = _entity_keys(spark, scratch, section)
        known = keys[side].select(F.col("_key").alias(f"{side}_key"))
        bad = stage.join(known, f"{side}_key", "left_anti")
        n = bad.count()
        if n and flag == "error":
            row = bad.orderBy("position").select("position", f"{side}_key").first()
            raise DataError(
                f"{key} {row[1]!r} is not in {section} (interactions naming unknown "
                f"{side}s: {n}; use --on-unknown-{side}=drop to skip such rows)",
                section="interactions", position=row[0], field=key)
        stage = stage.join(known, f"{side}_key", "left_semi")
        findings.drop("interactions", f"unknown_{side}", n)
    timed = stage.filter("ts_type IS NOT NULL AND ts_type <> 'NULL'").count()
    if timed:
        bad = stage.filter("timestamp IS NULL")
        n = bad.count()
        if n and policy.on_bad_timestamp == "error":
            pos = bad.agg(F.min("position")).first()[0]
            raise DataError(
                _timestamp_reason(sources["interactions"][1], pos)
                + f" (interactions with this problem: {n}; "
                "use --on-bad-timestamp=drop to skip them)",
                section="interactions", position=pos, field="timestamp")
        stage = stage.filter("timestamp IS NOT NULL")
        findings.drop("interactions", "bad_timestamp", n)
    users = keys["user"].withColumnRenamed("_key", "user_key")
    items = keys["item"].withColumnRenamed("_key", "item_key")
    (stage.join(users, "user_key").join(items, "item_key")
     .select("position", "user_id", "item_id", "interaction_type", "timestamp", "weight",
             "rating")
     .write.mode("overwrite").parquet(str(scratch / "interactions")))


def _timestamp_reason(src: Any, pos: int) -> str:
    """bad_timestamp_reason on the one record at ``pos`` (fetched from the source)."""
    rec = src.filter(f"pos = {int(pos)}").first()["rec"]
    con = ingest._witness_con("interactions", {int(pos): rec})
    prof = build_profile(con, "interactions", [(None, k) for k in INTERACTION_FIELDS])
    ts = next(f for f in prof.fields if f.name == "timestamp")
    return bad_timestamp_reason(prof, ts, pos)


def raw_report(data: Path | str, digest: str | None, seen: dict[str, int],
               kept: dict[str, int], findings: Findings) -> dict[str, Any]:
    """The report's input part, as raw.build_raw_tables writes it (a URI's listing digest
    in ``input.sha256``)."""
    if kept["interactions"] == 0:
        raise DataError("no interactions left to learn from", section="interactions")
    source: dict[str, Any] = {"path": input_path(data), "form": "folder"}
    if digest is not None:
        source.update(sha256=digest, sha256_of="listing")
    return {
        "unirec_version": __version__,
        "input": source,
        "sections": {s: {"seen": seen[s], "kept": kept[s],
                         "dropped": findings.dropped.get(s, {})} for s in SECTIONS},
        "warnings": findings.warnings,
    }


__all__ = ["SECTION_TABLES", "read_sources", "validate_sections", "match_interactions",
           "raw_report", "with_position"]
