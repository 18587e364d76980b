"""Input locations for the Spark engine: a local folder, or a URI of any Hadoop filesystem.

DATA may be ``s3a://bucket/logs``, ``hdfs://nn/logs``, ``file:///data/logs`` or any other
scheme whose Hadoop connector the session has: the folder is listed through that scheme's
``FileSystem`` on the driver and the files are read by the executors, so nothing is copied
to the driver. A scheme without its connector, a missing folder or an unreachable cluster
is one line naming the input, before any work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from unirec.errors import ConfigError, DataError
from unirec.featurize.ingest import _folder_files, is_uri, section_files
from unirec.featurize.spark.session import spark_path

# the Hadoop connector that serves each common scheme (hadoop-aws also serves s3://)
CONNECTORS = {"s3a": "org.apache.hadoop:hadoop-aws", "s3": "org.apache.hadoop:hadoop-aws",
              "gs": "com.google.cloud.bigdataoss:gcs-connector",
              "abfs": "org.apache.hadoop:hadoop-azure", "abfss": "org.apache.hadoop:hadoop-azure",
              "wasb": "org.apache.hadoop:hadoop-azure", "wasbs": "org.apache.hadoop:hadoop-azure"}


def input_files(spark: Any, data: Path | str) -> tuple[dict[str, tuple[str, str]], str | None]:
    """Each section's (file name, location Spark reads), and for a URI the sha256 of its
    listing (name, size, modification time of each section file): the input's identity in
    the manifest, since hashing a data lake's bytes on the driver would read it all."""
    if not is_uri(data):
        files = _folder_files(Path(data))
        return {s: (f.name, spark_path(f)) for s, f in files.items()}, None
    uri = str(data).rstrip("/")
    jvm = spark.sparkContext._jvm
    folder = jvm.org.apache.hadoop.fs.Path(uri)
    try:
        fs = folder.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        if not fs.exists(folder):
            raise DataError(f"input {uri!r} does not exist")
        if not fs.getFileStatus(folder).isDirectory():
            raise DataError(f"--engine spark reads a folder of users/items/interactions .jsonl "
                            f"or .parquet files; {uri!r} is a file")
        listed = {st.getPath().getName(): st for st in fs.listStatus(folder) if st.isFile()}
    except DataError:
        raise
    except Exception as exc:  # py4j's Py4JJavaError: the JVM's exception, first line kept
        raise _listing_error(uri, exc) from None
    names = section_files(uri, lambda name: name in listed)
    digest = hashlib.sha256()
    for section, name in names.items():
        st = listed[name]
        digest.update(f"{section}\0{name}\0{st.getLen()}\0{st.getModificationTime()}\0"
                      .encode())
    out = {s: (name, spark_path(f"{uri}/{name}")) for s, name in names.items()}
    return out, digest.hexdigest()


def _listing_error(uri: str, exc: Exception) -> Exception:
    """One line for a URI the session cannot list: a missing connector says which one."""
    java = getattr(exc, "java_exception", None)
    text = (java.toString() if java is not None else str(exc)).strip().splitlines()[0]
    scheme = uri.split("://", 1)[0]
    missing = ("UnsupportedFileSystemException" in text or "No FileSystem for scheme" in text
               or ("ClassNotFoundException" in text and "FileSystem" in text))
    if missing:  # no class for the scheme, or Hadoop names one whose jar is absent (s3a)
        package = CONNECTORS.get(scheme.lower(), "the Hadoop connector for it")
        return ConfigError(
            f"input {uri!r}: this Spark has no filesystem for scheme {scheme!r}; add its "
            f"connector ({package}, matching Spark's Hadoop version) with --set "
            "spark.conf.spark.jars.packages=... or on the cluster's classpath")
    detail = text.split(": ", 1)[-1] if ": " in text else text
    return DataError(f"input {uri!r} could not be listed: {detail}")


def input_path(data: Path | str) -> str:
    """The input as the report names it: a local folder made absolute, a URI as given."""
    return str(data) if is_uri(data) else str(Path(data).absolute())
