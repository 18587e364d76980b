"""featurize(): input -> validated, typed tables in a new store, swapped in atomically."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.errors import ConfigError
from unirec.features.plan import make_plan
from unirec.featurize.compile import (
    compile_features,
    create_index_maps,
    create_train_window,
    fit_ops,
)
from unirec.featurize.ingest import is_uri, uri_local_path
from unirec.featurize.progress import Stages, describe_plan
from unirec.featurize.raw import build_raw_tables
from unirec.featurize.samples import build_samples, item_popularity, write_sequences
from unirec.featurize.split import assign_splits
from unirec.store import (
    DB_FILE,
    OLDEST_DUCKDB,
    SEQUENCES_FILE,
    STORE_FORMAT,
    connect_for_write,
    storage_version,
)
from unirec.store.atomic import building, link_or_copy
from unirec.store.guard import MARKER, MARKER_TEXT, check_replaceable, resolve_store, store_lock
from unirec.store.layout import SECTION_TABLES, SECTIONS
from unirec.store.shards import write_split
from unirec.version import __version__


def featurize(
    data: str | Path,
    store: str | Path = "unirec-store",
    config: Config | None = None,
    *,
    plan_only: bool = False,
    append: bool = False,
    refit_stats: bool = False,
) -> dict[str, Any]:
    """Compile ``data`` (a JSON document or a folder of sections) into the store at ``store``.

    Returns the report (also written to ``report.json``); with ``plan_only`` returns the
    plan and writes nothing. Raises ``DataError`` on a structural problem; the previous
    store, if any, is then left untouched. Raises ``StoreError`` before any work when
    ``store`` is something featurize must not replace (see ``store.guard``) or another
    process is writing it.

    With ``append``, ``data`` holds new interactions and new or changed users and items,
    folded into the existing store with its indices and fitted statistics kept
    (``featurize.append``); ``refit_stats`` refits the statistics over everything instead.
    """
    if append or refit_stats:
        from unirec.featurize.append import append_data

        if config is not None and config.ingest.engine == "spark":
            raise ConfigError("--append runs on the DuckDB engine (the store's fitted state "
                              "is extended there): drop --engine spark")

        return append_data(data, store, config, refit_stats=refit_stats)
    cfg = config or Config()
    data = data if is_uri(data) else Path(data)
    store = Path(store)
    started = time.perf_counter()
    if cfg.ingest.engine == "spark":
        from unirec.featurize.spark import check_engine

        check_engine(data)
    elif is_uri(data):
        raise ConfigError(f"input {data!r} is a URI, which only --engine spark reads (through "
                          "Hadoop's filesystems); give the DuckDB engine a local path")
    if plan_only:
        with tempfile.TemporaryDirectory(prefix="unirec-plan-") as tmp:
            return _run(Path(tmp), data, store, cfg, started, plan_only=True)
    target = resolve_store(store)
    local = uri_local_path(str(data)) if is_uri(data) else data
    with store_lock(target, "featurize"):
        check_replaceable(target, [local] if local is not None else [])
        with building(target) as tmp:
            report, manifest = _run(tmp, data, target, cfg, started)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
            (tmp / MARKER).write_text(MARKER_TEXT)
    return report


def _run(tmp: Path, data: Path | str, store: Path, cfg: Config, started: float,
         plan_only: bool = False, raw: Any = None, frozen: dict[str, Any] | None = None
         ) -> Any:
    """The compile. ``raw(con, stage)`` builds the raw tables (default: read ``data``);
    ``frozen`` (feature key -> its manifest entry) keeps those fitted statistics."""
    con = connect_for_write(tmp / DB_FILE)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = '{tmp / '.spill'}'")
        if cfg.ingest.memory_limit:
            con.execute(f"SET memory_limit = '{cfg.ingest.memory_limit}'")
        with Stages(plan_only) as stages:
            if cfg.ingest.engine == "spark":
                from unirec.featurize.spark.run import spark_stages

                report, fit = spark_stages(con, data, cfg, tmp, stages.next)
                report["interactions_end"] = _interactions_end(con)
            else:
                report, fit = _duckdb_stages(con, data, cfg, stages.next, raw), fit_ops
            specs = make_plan(con, cfg)
            if plan_only:
                return describe_plan(con, specs, cfg, report, _base_dir(data))
            stages.next("features")
            _carry_cache(store / "cache", tmp / "cache")
            popularity = item_popularity(con)
            compiled = compile_features(con, specs, cfg, _base_dir(data), tmp, tmp / "cache",
                                        popularity, frozen, fit)
            report["embeddings"] = compiled["embeddings"]
            for kind, n in getattr(fit, "embedded", {}).items():  # Spark: on the executors
                report["embeddings"][kind]["embedded_on_executors"] = n
            image = compiled["embeddings"].get("image", {})
            if image.get("unreadable"):
                report["warnings"].append({
                    "section": "images", "field": "image", "count": image["unreadable"],
                    "message": "unreadable images (missing or not decodable, e.g. "
                    f"{image['unreadable_examples'][0]}): zero vectors, .missing = 1"})
            stages.next("shards")
            report["sequences"] = write_sequences(con, tmp / SEQUENCES_FILE)
            report["shards"] = {}
            if cfg.ingest.engine == "spark":
                from unirec.featurize.spark.run import executor_shards

                shards = executor_shards(cfg, tmp)
            else:
                shards = functools.partial(write_split, con)
            for split in ("train", "val"):
                written = shards(tmp / "shards", split,
                                 block_size=cfg.samples.block_size,
                                 shard_blocks=cfg.samples.shard_blocks,
                                 seed=cfg.samples.seed, shuffle=split == "train")
                report["shards"][split] = {"files": [p.name for p in written.pop("paths")],
                                           **written}
            _drop_temporaries(con)
            con.execute("CHECKPOINT")
    finally:
        con.close()
        shutil.rmtree(tmp / ".spark", ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report, _manifest(tmp, data, cfg, report, compiled)


def _interactions_end(con: duckdb.DuckDBPyConnection) -> int:
    """One past the last interaction position: where an append's positions continue."""
    return con.execute("SELECT coalesce(max(position), -1) + 1 FROM interactions"
                       ).fetchone()[0]


def _duckdb_stages(con: duckdb.DuckDBPyConnection, data: Path, cfg: Config,
                   stage: Callable[[str], None], raw: Any = None) -> dict[str, Any]:
    """Raw tables (``raw(con, stage)``, default: read ``data``), split, samples and the
    training window on this machine's DuckDB."""
    report = raw(con, stage) if raw is not None else build_raw_tables(con, data, cfg, stage)
    report["interactions_end"] = _interactions_end(con)
    stage("split")
    create_index_maps(con)
    report["split"] = assign_splits(con, cfg.split)
    stage("samples")
    report["samples"] = build_samples(con, cfg.samples)
    create_train_window(con)
    return report


def _base_dir(data: Path | str) -> Path:
    """Relative image paths resolve against the document's folder (or the input folder);
    for a URI, against the local folder a file:// URI names (other schemes have none: their
    images need absolute paths the executors and driver can open)."""
    if is_uri(data):
        return uri_local_path(str(data)) or Path.cwd()
    data = Path(data)
    return (data if data.is_dir() else data.parent).absolute()


def _carry_cache(old: Path, new: Path) -> None:
    """Hard-link the old store's embedding cache into the new one: re-featurizing unchanged
    text and images costs nothing, and the old store stays byte-for-byte intact."""
    if not old.is_dir():
        return
    for part in old.rglob("*.parquet"):
        dest = new / part.relative_to(old)
        dest.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(part, dest)


def _drop_temporaries(con: duckdb.DuckDBPyConnection) -> None:
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary")\
            .fetchall():
        con.execute(f'DROP TABLE "{name}"')


def _engine(cfg: Config) -> dict[str, Any]:
    """What ran the plan: the engine's name and version (and Spark's master)."""
    if cfg.ingest.engine != "spark":
        return {"name": "duckdb", "version": duckdb.__version__}
    import pyspark

    return {"name": "spark", "version": pyspark.__version__, "master": cfg.spark.master}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _manifest(store: Path, data: Path | str, cfg: Config, report: dict[str, Any],
              compiled: dict[str, Any]) -> dict[str, Any]:
    """The compiled plan: what is in the store, from which input, under which config."""
    con = duckdb.connect(str(store / DB_FILE), read_only=True)
    try:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
        storage = storage_version(con)
    finally:
        con.close()
    tables: dict[str, dict[str, str]] = {}
    # a URI's identity is its listing (Spark's report has it); a local input's, its bytes
    digest = report["input"].get("sha256") or _file_digest(Path(data))
    for table, column, dtype in rows:
        tables.setdefault(table, {})[column] = dtype
    return {
        "unirec_version": __version__,
        "store_format": STORE_FORMAT,
        "input": {**report["input"], "sha256": digest,
                  "base_dir": str(_base_dir(data))},
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "engine": _engine(cfg),
        # what featurize --append and fit --warm-start check (featurize.append)
        "stats_id": hashlib.sha256(json.dumps([cfg.hash(), compiled["features"]],
                                              sort_keys=True).encode()).hexdigest()[:16],
        "interactions_end": report["interactions_end"],
        "ancestors": [],
        "appends": [],
        "counts": {SECTION_TABLES[s]: report["sections"][s]["kept"] for s in SECTIONS},
        "split": report["split"],
        "samples": report["samples"],
        "features": compiled["features"],
        "tensors": compiled["tensors"],
        "embeddings": {k: {"model": v["model"]} for k, v in compiled["embeddings"].items()},
        "sequences": report["sequences"],
        "shards": report["shards"],
        "tables": tables,
        "duckdb_storage": {"version": storage, "written_by": f"duckdb {duckdb.__version__}",
                           "oldest_reader": f"duckdb {OLDEST_DUCKDB}"},
    }
