"""Parquet interactions are profiled from their typed columns, without JSON: the profile must
equal, row for row, the one built from the same rows written as JSON objects (so every rule,
typed column, count and error is the same), and anything that cannot promise that, or breaks
a rule, goes through the JSON path and gets the JSON input's exact line."""

from __future__ import annotations

import importlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirec.config import IngestConfig
from unirec.features import validate
from unirec.features.profile import build_profile, typed_profile
from unirec.features.validate import INTERACTION_FIELDS
from unirec.featurize.ingest import load_sources, typed_columns
from unirec.store import Store

FIELDS = [(None, k) for k in INTERACTION_FIELDS]
_TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
# arrow type -> values hypothesis draws for it (None = a null)
KINDS = {
    "int64": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "int32": (pa.int32(), st.integers(-2**31, 2**31 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "uint16": (pa.uint16(), st.integers(0, 2**16 - 1)),
    "float64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "float32": (pa.float32(), st.floats(width=32, allow_nan=True, allow_infinity=True)),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), st.text(max_size=12) | st.sampled_from(
        ["", " 1", "2024-01-15T10:00:00Z", "2024-01-15 10:00:00+02:00", "now", "1e5"])),
    "timestamp": (pa.timestamp("us"), _TIMES),
    "timestamptz": (pa.timestamp("us", tz="UTC"), _TIMES.map(lambda t: t.replace(tzinfo=UTC))),
    "date": (pa.date32(), st.dates(min_value=date(1, 1, 1))),
}


def _folder(tmp, interactions: pa.Table) -> None:
    pq.write_table(pa.table({"user_id": [1]}), tmp / "users.parquet")
    pq.write_table(pa.table({"item_id": [1]}), tmp / "items.parquet")
    pq.write_table(interactions, tmp / "interactions.parquet")


@st.composite
def _tables(draw) -> pa.Table:
    n = draw(st.integers(1, 12))
    fields = draw(st.lists(st.sampled_from(INTERACTION_FIELDS), min_size=1, unique=True))
    columns = {}
    for name in fields:
        arrow_type, values = KINDS[draw(st.sampled_from(sorted(KINDS)))]
        columns[name] = pa.array(draw(st.lists(st.none() | values, min_size=n, max_size=n)),
                                 arrow_type)
    return pa.table(columns)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=_tables())
def test_the_typed_profile_is_the_json_profile(tmp_path_factory, table) -> None:
    tmp = tmp_path_factory.mktemp("pq")
    _folder(tmp, table)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    load_sources(con, tmp, IngestConfig())
    prof = typed_profile(con, "interactions", FIELDS, typed_columns(con, "interactions"))
    assert prof is not None
    json_form = ["pos"] + [c for f in prof.fields for c in (f.t, f.v)]
    typed = con.execute(f"SELECT {', '.join(json_form)} FROM prof_interactions "
                        "ORDER BY pos").fetchall()
    for f in prof.fields:  # a signed integer column is also there as read, for the ids
        if f.idx in prof.native_ints:
            assert con.execute(f"SELECT count(*) FROM prof_interactions WHERE "
                               f"{prof.native_ints[f.idx]} IS DISTINCT FROM "
                               f"TRY_CAST({f.v} AS BIGINT)").fetchone()[0] == 0
    con.execute("DROP VIEW prof_interactions")
    build_profile(con, "interactions", FIELDS)  # over src_interactions: the rows as JSON
    assert typed == con.execute("SELECT * FROM prof_interactions ORDER BY pos").fetchall()


def test_columns_without_an_exact_json_form_are_not_profiled_typed(tmp_path) -> None:
    decimal = pa.array([Decimal("1.5")], pa.decimal128(4, 2))
    for extra in ({"user_id": pa.array([[1]])}, {"weight": decimal},
                  {"user_id": pa.array([1]), "clicks": pa.array([1])}):
        _folder(tmp_path, pa.table(extra))
        con = duckdb.connect()
        load_sources(con, tmp_path, IngestConfig())
        assert typed_profile(con, "interactions", FIELDS, typed_columns(con, "interactions")) \
            is None, extra


def _write(doc: dict, folder, fmt: str) -> None:
    folder.mkdir()
    for section, stem in (("user_data", "users"), ("item_data", "items"),
                          ("interactions", "interactions")):
        if fmt == "jsonl":
            (folder / f"{stem}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in doc[section]))
        else:
            pq.write_table(pa.Table.from_pylist(doc[section]), folder / f"{stem}.parquet")


def _interactions(*rows: dict) -> dict:
    """Users 1-3, items 10-12 (one flat type per field, as Parquet needs) and ``rows``."""
    return {"user_data": [{"user_id": u, "categorical": {"country": c}}
                          for u, c in ((1, "US"), (2, "FR"), (3, None))],
            "item_data": [{"item_id": i, "continuous": {"price": p}}
                          for i, p in ((10, 1.5), (11, None), (12, 3.0))],
            "interactions": [{"user_id": 1, "item_id": 10, "timestamp": "2024-01-01T00:00:00",
                              "weight": 1.0, "rating": 4.0, "interaction_type": "view", **row}
                             for row in rows]}


def _error_lines(doc: dict, tmp_path: Path, needle: str) -> list[str]:
    """The one error line (containing ``needle``) featurize gives ``doc`` written as JSON
    lines, then as Parquet."""
    lines = []
    for fmt in ("jsonl", "parquet"):
        _write(doc, tmp_path / fmt, fmt)
        result = invoke("featurize", tmp_path / fmt, "--store", tmp_path / f"s-{fmt}")
        lines.append(one_error_line(result, needle))
    return lines


@pytest.mark.parametrize("bad", [
    {"weight": -1.0}, {"weight": float("nan")}, {"timestamp": "yesterday"},
    {"user_id": 99}, {"rating": float("inf")}, {"interaction_type": " "},
])
def test_a_bad_parquet_row_gets_the_jsonl_line(tmp_path, bad) -> None:
    doc = _interactions({}, {"user_id": 2, "item_id": 11, **bad}, {})
    jsonl, parquet = _error_lines(doc, tmp_path, "interactions[1]")
    assert jsonl == parquet


def test_an_unknown_parquet_column_gets_the_jsonl_line(tmp_path) -> None:
    doc = _interactions({"clicks": 3}, {"clicks": 4})
    jsonl, parquet = _error_lines(doc, tmp_path, "unknown key 'clicks'")
    assert jsonl == parquet


def test_parquet_and_jsonl_compile_to_the_same_store(tmp_path, monkeypatch) -> None:
    doc = _interactions({}, {"user_id": 2, "item_id": 11, "weight": 0.5, "rating": None},
                        {"user_id": 3, "item_id": 12, "timestamp": "2024-01-02T10:00:00+02:00"},
                        {"user_id": 1, "item_id": 12, "weight": 0.0, "interaction_type": "buy"})
    typed = []
    raw = importlib.import_module("unirec.featurize.raw")
    monkeypatch.setattr(raw, "typed_interaction_columns",
                        lambda *a: typed.append(validate.typed_interaction_columns(*a))
                        or typed[-1])
    for fmt in ("jsonl", "parquet"):
        _write(doc, tmp_path / fmt, fmt)
        result = invoke("featurize", tmp_path / fmt, "--store", tmp_path / f"s-{fmt}")
        assert result.exit_code == 0, result.output
    assert len(typed) == 1 and typed[0] is not None  # Parquet took the typed profile
    prof, cols = typed[0]
    assert set(prof.native_ints) == {0, 1}  # the int64 ids, read as integers
    assert cols["user_id"].expr == "CAST(n0 AS BIGINT)"
    a, b = Store(tmp_path / "s-jsonl"), Store(tmp_path / "s-parquet")
    for table in ("users", "items", "interactions", "samples", "user_sequences"):
        query = f"SELECT * FROM {table} ORDER BY ALL"
        assert a.sql(query).equals(b.sql(query)), table
    assert a.report["sections"] == b.report["sections"]
    assert a.report["warnings"] == b.report["warnings"]


@pytest.mark.parametrize("stem", ["users", "interactions"])
def test_an_unreadable_parquet_file_is_one_line(tmp_path, stem) -> None:
    _write(_interactions({}), tmp_path / "in", "parquet")
    path = tmp_path / "in" / f"{stem}.parquet"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut in the middle
    result = invoke("featurize", tmp_path / "in", "--store", tmp_path / "s")
    one_error_line(result, f"{stem}.parquet could not be read")
