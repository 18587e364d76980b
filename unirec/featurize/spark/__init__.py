"""``featurize --engine spark``: the same plan, run as Spark jobs, writing the same store.

Spark does the interaction-sized work: reading and validating the folder, a local path or
any Hadoop URI (``uri``; DuckDB's own rules, run per partition on the executors:
``ingest``), duplicates and unknown ids, the split, each user's sequence and the samples,
popularity, the fits of the plan's ops (vocabularies; the training windows of statistics:
``fit``), the embeddings (``embed``) and the shards (``shards``). The tables come back as
Parquet under the building store and are loaded into ``features.duckdb``; from there the
entity-sized compile (feature tables, tensors) is the DuckDB engine's own code, so both
engines write one store layout.
"""

from unirec.featurize.spark.session import check_engine, spark_session

__all__ = ["check_engine", "spark_session"]
