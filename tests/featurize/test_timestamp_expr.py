"""The cheap TIMESTAMP cast that featurize uses for plain ISO date-times under a UTC session
reads every string exactly as the TIMESTAMPTZ cast it replaces: offsets, zone names,
impossible dates, year 0 and pre-Gregorian years included."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from unirec.features.profile import Field
from unirec.features.validate import timestamp_expr

TS = Field(None, "timestamp", 0)
_DIGITS = st.text("0123456789", min_size=1, max_size=9)


@st.composite
def _stamps(draw) -> str:
    year = draw(st.integers(0, 9999) | st.sampled_from([0, 1, 1582, 1583, 1969, 2024, 9999]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), \
        draw(st.integers(0, 61))
    sep = draw(st.sampled_from(["T", " ", "t", "  "]))
    frac = draw(st.sampled_from(["", "."]) | _DIGITS.map(lambda d: "." + d))
    zone = draw(st.sampled_from(["", "", "Z", "+02", "+02:00", "-05:30", "+0200", " UTC",
                                 " Europe/Paris", " America/New_York", "+14:00", " ", "x"]))
    date = f"{year:04d}-{month:02d}-{day:02d}"
    form = draw(st.sampled_from(["date", "minutes", "seconds", "seconds", "month"]))
    if form == "date":
        return date + zone
    if form == "month":
        return f"{year:04d}-{month:02d}{zone}"
    clock = f"{hour:02d}:{minute:02d}" + (f":{second:02d}{frac}" if form == "seconds" else "")
    return f"{date}{sep}{clock}{zone}"


@settings(max_examples=60, deadline=None)
@given(st.lists(_stamps() | st.text(max_size=25), min_size=1, max_size=400))
def test_the_plain_cast_reads_what_the_zoned_cast_reads(values) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("v", pa.table({"v0": values, "t0": ["VARCHAR"] * len(values)}))
    fast, slow = timestamp_expr(TS, utc=True), timestamp_expr(TS, utc=False)
    assert fast != slow
    rows = con.execute(f"SELECT v0, {fast}, {slow} FROM v WHERE ({fast}) IS DISTINCT FROM "
                       f"({slow})").fetchall()
    assert rows == []
