"""Inspection: read-only SQL, tables, schema, through the CLI and Python."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import invoke, popen_unirec, run_unirec, write_doc

from unirec import Store, StoreError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import copy

    from conftest import BASE_DOC

    root = tmp_path_factory.mktemp("sql")
    result = invoke("featurize", write_doc(root / "d.json", copy.deepcopy(BASE_DOC)),
                    "--store", root / "store")
    assert result.exit_code == 0, result.output
    return root / "store"


def test_writes_are_refused_and_change_nothing(store) -> None:
    for query in ("DELETE FROM users", "DROP TABLE items", "INSERT INTO users (user_id) "
                  "VALUES (9)", "UPDATE interactions SET weight = 0",
                  "CREATE TABLE t AS SELECT 1"):
        result = invoke("sql", query, "--store", store)
        assert result.exit_code == 1, query
        assert result.stderr.startswith("Error: the store is read-only"), result.stderr
    counts = Store(store).counts()
    assert (counts["interactions"], counts["items"], counts["users"]) == (3, 3, 3)


def test_delete_in_a_real_subprocess(store) -> None:
    proc = run_unirec("sql", "DELETE FROM users", "--store", store)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: the store is read-only")
    assert "Traceback" not in proc.stderr
    proc = run_unirec("sql", "SELECT count(*) AS n FROM users", "--store", store,
                      "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 3}]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_ctrl_c_inside_a_query_aborts_without_a_traceback(store) -> None:
    # One Ctrl-C stops a long query at once, with click's "Aborted!" and no traceback.
    # DuckDB's binding alone sometimes lets the signal pass unseen while its main thread
    # waits (three such processes on two cores: most runs), and when it does see one it
    # raises RuntimeError("Query interrupted"), not KeyboardInterrupt (this broke `unirec
    # tune`'s Ctrl-C in CI). The signal goes once the process has burnt more CPU than its
    # imports take (~0.6 s), so it lands inside the query.
    query = "SELECT sum(hash(range)) FROM range(1000000000000)"  # hours of streaming work
    proc = popen_unirec("sql", query, "--store", store)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and _cpu_seconds(proc.pid) < 2.5:
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    assert stderr.strip() == "Aborted!", stderr


def test_formats(store) -> None:
    q = "SELECT user_id, categorical.genres AS g FROM users ORDER BY user_id"
    as_json = json.loads(invoke("sql", q, "--store", store, "--format", "json").stdout)
    assert as_json == [{"user_id": 1, "g": ["drama", "comedy"]}, {"user_id": 2, "g": ["drama"]},
                       {"user_id": 3, "g": None}]
    rows = list(csv.DictReader(io.StringIO(
        invoke("sql", q, "--store", store, "--format", "csv").stdout)))
    assert rows[0] == {"user_id": "1", "g": '["drama","comedy"]'}
    table = invoke("sql", q, "--store", store).stdout
    assert "user_id" in table and "comedy" in table


def test_query_from_stdin(store) -> None:
    result = invoke("sql", "-", "--store", store, "--format", "csv",
                    input="SELECT item_id FROM items\nORDER BY item_id DESC")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["item_id", "12", "11", "10"]


def test_tables_and_schema(store) -> None:
    counts = json.loads(invoke("tables", "--counts", "--store", store, "--format", "json").stdout)
    rows = {r["table"]: r["rows"] for r in counts}
    assert (rows["interactions"], rows["items"], rows["users"], rows["samples"]) == (3, 3, 3, 3)
    assert {"vocab", "stats", "user_features", "item_features", "text_embeddings",
            "image_embeddings", "item_popularity"} <= set(rows)
    cols = json.loads(invoke("schema", "interactions", "--store", store,
                             "--format", "json").stdout)
    assert [c["column"] for c in cols] == ["position", "user_id", "item_id", "interaction_type",
                                           "timestamp", "weight", "rating"]
    bad = invoke("schema", "user", "--store", store)
    assert bad.exit_code == 1 and "did you mean 'users'" in bad.stderr


def test_bad_query_and_missing_store(store, tmp_path) -> None:
    result = invoke("sql", "SELEC 1", "--store", store)
    assert result.exit_code == 1 and result.stderr.startswith("Error: query failed")
    result = invoke("tables", "--store", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "no feature store" in result.stderr and "unirec featurize" in result.stderr


def test_python_api_returns_polars(store) -> None:
    frame = Store(store).sql("SELECT * FROM items WHERE item_id = ?", [10])
    assert isinstance(frame, pl.DataFrame) and frame.height == 1
    with pytest.raises(StoreError):
        Store(store).sql("DELETE FROM items")


def test_store_env_var(store, monkeypatch) -> None:
    monkeypatch.setenv("UNIREC_STORE", str(store))
    result = invoke("sql", "SELECT count(*) AS n FROM items", "--format", "csv")
    assert result.stdout.split() == ["n", "3"]
