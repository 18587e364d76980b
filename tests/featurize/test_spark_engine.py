"""``featurize --engine spark`` (local[2]) writes the store ``--engine duckdb`` writes.

One synthetic folder with every feature kind, images, several interaction types and ties
in time, featurized by both engines (Spark over 3 partitions, so every cross-partition
merge runs): vocabularies, statistics, tensors, samples, histories, split assignments and
shard files (written by the executors) are equal bit for bit, floats included, and a fit +
evaluate with one seed gives the same metrics. Bad
input gets the same one-line error from both engines, and the previous store survives.
The Spark run reads the folder as a file:// URI (Hadoop's filesystem), the error cases as
local paths. One SparkSession serves the whole module (the engine keeps one per process).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from conftest import BASE_DOC, invoke, one_error_line, tree_digest
from safetensors.numpy import load_file

from unirec.featurize.spark.session import _java, java_major
from unirec.store.shards import read_blocks

_JAVA = _java()
if importlib.util.find_spec("pyspark") is None:
    pytest.skip("pyspark is not installed (pip install 'unirec[spark]')", allow_module_level=True)
if not _JAVA or (java_major(_JAVA) or 0) < 17:
    pytest.skip("Spark needs Java 17+ (none found)", allow_module_level=True)

SPARK = ("--engine", "spark", "--spark-master", "local[2]", "--set", "spark.partitions=3",
         "--set", "spark.conf.spark.sql.shuffle.partitions=2")


TABLES = ("users", "items", "interactions", "user_map", "item_map", "vocab", "stats",
          "user_features", "item_features", "samples", "user_sequences", "item_popularity",
          "sample_history", "text_embeddings", "image_embeddings")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """The same folder featurized by each engine."""
    root = tmp_path_factory.mktemp("engines")
    data = root / "data"
    out = invoke("datasets", "synthetic", "--users", "60", "--items", "40", "--interactions",
                 "900", "--seed", "5", "--images", "--format", "folder", "--out", data)
    assert out.exit_code == 0, out.output
    inter = pl.read_ndjson(data / "interactions.jsonl")
    # ties: times cut to the day, so a user's same-day interactions share one time
    inter = inter.with_columns(pl.col("timestamp").str.slice(0, 10))
    inter.write_ndjson(data / "interactions.jsonl")
    assert inter.group_by("user_id", "timestamp").len()["len"].max() > 1
    assert inter["interaction_type"].n_unique() > 2
    users = pl.read_ndjson(data / "users.jsonl")
    assert {"categorical", "continuous", "temporal"} <= set(users.columns)
    items = pl.read_ndjson(data / "items.jsonl")
    assert {"text", "image"} <= set(items.columns)
    weights = ("--set", 'samples.type_weights={"purchase": 3.0, "view": 0.5}',
               "--set", "samples.block_size=32", "--set", "samples.shard_blocks=2")  # shards
    duck = invoke("featurize", data, "--store", root / "duck", *weights)
    assert duck.exit_code == 0, duck.output
    # a URI, passed through to Spark; executors embed with the driver's torch threads
    spark = invoke("featurize", data.absolute().as_uri(), "--store", root / "spark", *weights,
                   *SPARK, "--set", f"spark.cache_dir={root / 'shared-cache'}")
    assert spark.exit_code == 0, spark.output
    return root / "duck", root / "spark"


def _rows(store: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(store / "features.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def _schema(store: Path) -> list[tuple]:
    con = duckdb.connect(str(store / "features.duckdb"), read_only=True)
    try:
        return con.execute("SELECT table_name, column_name, data_type FROM "
                           "information_schema.columns ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_same_tables(stores) -> None:
    duck, spark = stores
    assert _schema(duck) == _schema(spark)
    for table in TABLES:  # floats too, bit for bit: statistics, scaled features, vectors
        a, b = _rows(duck, table), _rows(spark, table)
        assert a, table
        assert a == b, f"{table} differs between the engines"


def test_same_fitted_state_and_report(stores) -> None:
    duck, spark = stores
    md, ms = (json.loads((s / "manifest.json").read_text()) for s in stores)
    assert md["engine"]["name"] == "duckdb" and ms["engine"]["name"] == "spark"
    assert ms["engine"]["master"] == "local[2]"
    for key in ("tensors", "split", "samples", "sequences", "counts", "tables", "features",
                "shards"):
        assert md[key] == ms[key], key
    assert ms["input"]["path"].startswith("file:///") and ms["input"]["sha256_of"] == "listing"
    rd, rs = (json.loads((s / "report.json").read_text()) for s in stores)
    for key in ("sections", "warnings", "split", "samples", "sequences", "shards"):
        assert rd[key] == rs[key], key
    assert rd["split"]["counts"]["test"] > 0 and rd["samples"]["dropped"] == \
        rs["samples"]["dropped"]
    # the executors wrote into the shared cache; the store holds the same parts
    shared = sorted(p.relative_to(spark.parent / "shared-cache")
                    for p in (spark.parent / "shared-cache").glob("*/part-*.parquet"))
    assert shared and shared == sorted(p.relative_to(spark / "cache")
                                       for p in (spark / "cache").glob("*/part-*.parquet"))
    # every vector was computed on the executors; the driver found them all in the cache
    for kind in ("text", "image"):
        assert rs["embeddings"][kind]["embedded_on_executors"] == rd["embeddings"][kind][
            "embedded"] > 0
        assert rs["embeddings"][kind]["embedded"] == 0


def test_same_tensors_and_shards(stores) -> None:
    duck, spark = stores
    for path in sorted((duck / "tensors").glob("*.safetensors")):
        a, b = load_file(str(path)), load_file(str(spark / "tensors" / path.name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{path.name}:{key}")
    # the executors wrote the shards (several, by several tasks): the driver's bytes
    names = sorted(p.name for p in (duck / "shards").iterdir())
    assert names == sorted(p.name for p in (spark / "shards").iterdir())
    assert sum(n.startswith("train-") for n in names) > 3
    for name in names:
        assert (duck / "shards" / name).read_bytes() == (spark / "shards" / name).read_bytes()
    blocks = list(read_blocks(sorted((spark / "shards").glob("train-*.tar"))))
    assert sum(len(b["position"]) for b in blocks) == json.loads(
        (spark / "manifest.json").read_text())["shards"]["train"]["n_samples"] > 0


def test_same_metrics_after_fit(stores, tmp_path) -> None:
    results = []
    for store in stores:
        copy = shutil.copytree(store, tmp_path / store.name)
        fit = invoke("fit", "--store", copy, "--epochs", "2", "--set", "train.dim=16",
                     "--set", "train.seed=3", "--set", "train.batch_size=128")
        assert fit.exit_code == 0, fit.output
        ev = invoke("evaluate", "--store", copy, "-k", "10", "--format", "json")
        assert ev.exit_code == 0, ev.output
        results.append(json.loads(ev.stdout))
    assert results[0] == results[1]
    assert any(v for v in results[0].values())


# ------------------------------------------------------------------ bad input, both engines
def _folder(path: Path, doc: dict) -> Path:
    """BASE_DOC as a folder of JSONL files (record i of a section on line i)."""
    path.mkdir(parents=True)
    for section, stem in (("user_data", "users"), ("item_data", "items"),
                          ("interactions", "interactions")):
        lines = [json.dumps(r) + "\n" for r in doc[section]]
        (path / f"{stem}.jsonl").write_text("".join(lines))
    return path


def _set(doc: dict, path: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split("/")]
    node = doc
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


def _del(doc: dict, path: str) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split("/")]
    node = doc
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]


ERRORS = [  # (case, mutation) from tests/test_featurize_errors.py, as folders: one per kind of
    # rule (record-level, cross-record type, duplicate, field type, list elements, unknown id,
    # timestamp, value, empty result), 5-20 seconds of Spark each
    ("record-scalar", lambda d: _set(d, "user_data/1", 5)),
    ("item-id-mixed", lambda d: _set(d, "item_data/2/item_id", "12")),
    ("user-id-duplicate", lambda d: _set(d, "user_data/2/user_id", 1)),
    ("unknown-record-key", lambda d: _set(d, "user_data/1/categorcal", {"a": "b"})),
    ("continuous-string", lambda d: _set(d, "user_data/0/continuous/age", "30")),
    ("temporal-mixed", lambda d: _set(d, "user_data/0/temporal/prev", [10, "eleven"])),
    ("interaction-unknown-user", lambda d: _set(d, "interactions/1/user_id", 99)),
    ("timestamp-unparseable", lambda d: _set(d, "interactions/1/timestamp", "yesterday")),
    ("weight-negative", lambda d: _set(d, "interactions/0/weight", -1)),
    ("user-id-missing", lambda d: _del(d, "user_data/2/user_id")),
    ("group-not-object", lambda d: _set(d, "item_data/0/continuous", [1, 2])),
    ("categorical-mixed", lambda d: _set(d, "user_data/1/categorical/country", 33)),
    ("timestamp-partial", lambda d: _del(d, "interactions/2/timestamp")),
    ("no-interactions", lambda d: _set(d, "interactions", [])),
]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("good")
    result = invoke("featurize", _folder(root / "data", copy.deepcopy(BASE_DOC)),
                    "--store", root / "store")
    assert result.exit_code == 0, result.output
    return root / "store", tree_digest(root / "store")


@pytest.mark.parametrize("case,mutate", ERRORS, ids=[c[0] for c in ERRORS])
def test_same_error_line(tmp_path, good_store, case, mutate) -> None:
    store, before = good_store
    doc = copy.deepcopy(BASE_DOC)
    mutate(doc)
    data = _folder(tmp_path / "bad", doc)
    duck = one_error_line(invoke("featurize", data, "--store", tmp_path / "unused"))
    spark = one_error_line(invoke("featurize", data, "--store", store, *SPARK))
    assert spark == duck
    assert tree_digest(store) == before, "a failed Spark featurize changed the previous store"
    assert not [p for p in store.parent.iterdir() if ".building-" in p.name]


def test_document_input_is_refused(tmp_path) -> None:
    doc = tmp_path / "data.json"
    doc.write_text(json.dumps(BASE_DOC))
    one_error_line(invoke("featurize", doc, "--store", tmp_path / "s", "--engine", "spark"),
                   "--engine spark reads a folder", "--engine duckdb")


def test_old_java_is_refused_up_front(tmp_path, monkeypatch) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    java.chmod(0o755)
    monkeypatch.setitem(os.environ, "JAVA_HOME", str(tmp_path / "jdk"))
    data = _folder(tmp_path / "data", copy.deepcopy(BASE_DOC))
    one_error_line(invoke("featurize", data, "--store", tmp_path / "s", "--engine", "spark"),
                   "needs Java 17 or newer", "Java 11")
    assert not (tmp_path / "s").exists()


def test_a_line_that_is_not_json_is_located(tmp_path) -> None:
    data = _folder(tmp_path / "data", copy.deepcopy(BASE_DOC))
    lines = (data / "users.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-1]  # cut the closing brace
    lines[1:1] = ["", " \t "]  # blank lines are not records
    (data / "users.jsonl").write_text("\n".join(lines) + "\n")
    duck = one_error_line(invoke("featurize", data, "--store", tmp_path / "a"),
                          "user_data[1]: users.jsonl could not be read: not valid JSON")
    spark = one_error_line(invoke("featurize", data, "--store", tmp_path / "b", *SPARK))
    assert spark == duck


def test_uri_without_its_connector_is_one_line(tmp_path) -> None:
    for uri, needles in (("s3a://unirec-bucket/logs", ("no filesystem for scheme 's3a'",
                                                        "hadoop-aws", "spark.jars.packages")),
                         ((tmp_path / "absent").as_uri(), ("does not exist",))):
        one_error_line(invoke("featurize", uri, "--store", tmp_path / "s", *SPARK), *needles)
        assert not (tmp_path / "s").exists()
    one_error_line(invoke("featurize", "s3a://unirec-bucket/logs", "--store", tmp_path / "s"),
                   "only --engine spark reads")
