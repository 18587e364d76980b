"""Check what ``--engine spark`` needs before any work, and hold one SparkSession.

Both checks fail with one line: the spark extra (pyspark) and a Java 17+ runtime (Spark 4
refuses older JVMs with a page of JVM output, long after the store lock is taken).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unirec.config import SparkConfig
from unirec.errors import ConfigError, DataError, require_extra

MIN_JAVA = 17
_SESSION: dict[str, Any] = {}


def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for 1.8), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def check_engine(data: Path | str) -> None:
    """Raise a one-line error unless Spark can run here and ``data`` is a folder (a URI
    is listed through its Hadoop filesystem when the session starts: ``uri.input_files``)."""
    from unirec.featurize.ingest import is_uri

    require_extra("spark", "featurize --engine spark")
    java = _java()
    major = java_major(java) if java else None
    if major is None or major < MIN_JAVA:
        found = f"Java {major} at {java}" if major else (f"{java}, which does not run" if java
                                                          else "no java on PATH or JAVA_HOME")
        raise ConfigError(f"--engine spark needs Java {MIN_JAVA} or newer ({found}); install "
                          "one (e.g. apt install openjdk-17-jre-headless) and set JAVA_HOME")
    if is_uri(data):
        return
    data = Path(data)
    if not data.exists():
        raise DataError(f"input {str(data)!r} does not exist")
    if not data.is_dir():
        raise DataError(f"--engine spark reads a folder of users/items/interactions .jsonl or "
                        f".parquet files; {str(data)!r} is one JSON document (featurize it with "
                        "--engine duckdb, or write it as a folder)")


def spark_path(path: Path) -> str:
    """A path for Spark's readers, which treat ``[]{}*?`` as a glob (a store named
    ``s[1]`` would match nothing): those characters escaped."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", str(path))


def jvm_log() -> Path:
    """Where the driver JVM's own output goes (this process's, one file per process)."""
    return Path(tempfile.gettempdir()) / f"unirec-spark-{os.getpid()}.log"


@contextmanager
def _jvm_output_to(path: Path) -> Iterator[None]:
    """Start the JVM with its stderr on ``path``: the JVM and Spark print startup lines
    there ('Using incubator modules', 'Setting default log level') before any logging
    config applies, and a featurize prints its own lines (a refused run exactly one).
    The driver's failures still come back as Python exceptions, turned into one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def spark_session(cfg: SparkConfig) -> Any:
    """One SparkSession per process (Spark allows one SparkContext): created on first use
    with ``cfg``'s master and settings, reused by every later featurize in the process."""
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    from pyspark.sql import SparkSession

    # Python workers run this very interpreter (its packages, unirec included) unless the
    # cluster says otherwise; PySpark reads the variable when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    key = repr((cfg.master, sorted(cfg.conf.items())))
    if _SESSION.get("key") == key and _SESSION["spark"].sparkContext._jsc is not None:
        return _SESSION["spark"]
    if "spark" in _SESSION:
        _SESSION.pop("spark").stop()
    builder = (SparkSession.builder.master(cfg.master).appName("unirec featurize")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "8")
               .config("spark.sql.ansi.enabled", "false"))
    conf = dict(cfg.conf)
    quiet = f"-Dlog4j2.configurationFile=file:{Path(__file__).with_name('log4j2.properties')}"
    java_opts = conf.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" not in java_opts:
        conf["spark.driver.extraJavaOptions"] = f"{quiet} {java_opts}".strip()
    for name, value in conf.items():
        builder = builder.config(name, value)
    with _jvm_output_to(jvm_log()):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _SESSION.update(key=key, spark=spark)
    return spark
