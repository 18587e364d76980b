"""Arrow <-> numpy without pandas (``unirec.store.arrow``): exact values, and featurize
never imports pandas (pyarrow's own conversions would, ~0.2 s a process)."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import BASE_DOC, write_doc

from unirec.store.arrow import from_numpy, strings, to_numpy

COLUMNS = ("range::TINYINT i8, range::INTEGER i32, range::UBIGINT u64, range::FLOAT f32, "
           "range::DOUBLE f64, range % 3 = 0 b, make_timestamp(range * 1000) ts")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """Two record batches (so columns are chunked) of every fixed-width type used."""
    con = duckdb.connect()
    return con.sql(f"SELECT {COLUMNS} FROM range(100)").to_arrow_table(60)


def test_every_fixed_width_type_equals_pyarrows_conversion(table) -> None:
    assert table.column("i32").num_chunks == 2
    for name in table.column_names:
        col = table.column(name)
        got, want = to_numpy(col), col.to_numpy()
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want)
        for start, length in ((0, 100), (7, 50), (61, 13), (99, 1), (5, 0)):
            part = col.combine_chunks().slice(start, length)  # offsets, even for bit-packed bools
            np.testing.assert_array_equal(to_numpy(part), want[start:start + length])


def test_nulls_and_strings_go_through_pyarrow() -> None:
    with_null = pa.array([1.0, None, 3.0])
    np.testing.assert_array_equal(to_numpy(with_null), [1.0, np.nan, 3.0])
    assert list(to_numpy(pa.array(["a", "b"]))) == ["a", "b"]


@pytest.mark.parametrize("values", [
    np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int64) - 2, np.linspace(0, 1, 7),
    np.arange(3, dtype=np.float32), np.array([True, False, True, True, False, False, True,
                                              False, True]),
    np.arange(4).astype("datetime64[us]"), np.zeros(0, np.int64)])
def test_from_numpy_round_trips_through_duckdb(values) -> None:
    arr = from_numpy(values[::-1])  # not contiguous: copied first
    con = duckdb.connect()
    con.register("t", pa.table({"v": arr}))
    back = con.sql("SELECT v FROM t").fetchnumpy()["v"]
    np.testing.assert_array_equal(np.asarray(back, dtype=values.dtype), values[::-1])
    with pytest.raises(ValueError, match="1-d"):
        from_numpy(values.reshape(1, -1))


def test_strings() -> None:
    con = duckdb.connect()
    con.register("t", pa.table({"s": strings(["é", "", "b"])}))
    assert con.sql("SELECT s FROM t").fetchall() == [("é",), ("",), ("b",)]


def test_featurize_never_imports_pandas(tmp_path) -> None:
    doc = {section: [{k: v for k, v in rec.items() if k not in ("text", "image")}
                     for rec in recs] for section, recs in BASE_DOC.items()}
    data = write_doc(tmp_path / "d.json", doc)
    code = ("import sys\nfrom unirec.cli.main import cli\n"
            f"cli(['featurize', {str(data)!r}, '--store', {str(tmp_path / 's')!r}], "
            "standalone_mode=False)\n"
            "print('PANDAS', 'pandas' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "PANDAS False" in proc.stdout, proc.stdout + proc.stderr
