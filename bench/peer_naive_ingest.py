"""The naive ingest unirec's featurize must beat: json.load, pandas frames, the same checks.

Why: this is what a user writes by hand to load the input document into a queryable store,
so it is the honest bar for ``unirec featurize`` (see PROTOCOL.md, "Speed and scale"). It
reads the whole document, builds one DataFrame per section, counts the problems unirec's
validation counts, writes the three frames to a DuckDB file and prints one JSON line of counts.

Usage: python bench/peer_naive_ingest.py DOC [--db OUT.duckdb]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd


def _id_problems(ids: pd.Series) -> tuple[int, int]:
    """(empty or null ids, duplicated ids) in one id column."""
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    return int(empty.sum()), int(ids[~empty].duplicated().sum())


def _continuous_problems(df: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Coerce every ``continuous.*`` column to float; count non-numeric and non-finite values."""
    non_numeric = non_finite = 0
    for col in [c for c in df.columns if c.startswith("continuous.")]:
        num = pd.to_numeric(df[col], errors="coerce").astype("float64")
        non_numeric += int((num.isna() & df[col].notna()).sum())
        non_finite += int((num.notna() & ~np.isfinite(num)).sum())
        df[col] = num
    return df, non_numeric, non_finite


def _timestamps(ts: pd.Series) -> tuple[pd.Series, int]:
    """Parse ISO-8601 strings or unix seconds to UTC; count values that do not parse."""
    present = ts.notna()
    if pd.api.types.is_numeric_dtype(ts):
        return pd.to_datetime(ts, unit="s", utc=True), 0
    if pd.api.types.is_string_dtype(ts):  # all strings: no need to try numbers first
        parsed = pd.to_datetime(ts, utc=True, format="ISO8601", errors="coerce")
        return parsed, int((present & parsed.isna()).sum())
    parsed = pd.Series(pd.NaT, index=ts.index, dtype="datetime64[us, UTC]")
    numeric = pd.to_numeric(ts.where(present), errors="coerce")
    is_num = numeric.notna()
    if is_num.any():
        parsed[is_num] = pd.to_datetime(numeric[is_num], unit="s", utc=True)
    text = present & ~is_num
    if text.any():
        parsed[text] = pd.to_datetime(ts[text].astype(str), utc=True, format="ISO8601",
                                      errors="coerce")
    return parsed, int((present & parsed.isna()).sum())


def ingest(doc_path: Path, db_path: Path) -> dict[str, Any]:
    """Load, check and store one document; return the counts unirec's report also holds."""
    with doc_path.open(encoding="utf-8") as f:
        doc = json.load(f)
    users = pd.json_normalize(doc.get("user_data", []))
    items = pd.json_normalize(doc.get("item_data", []))
    inter = pd.DataFrame(doc.get("interactions", []))
    del doc
    counts: dict[str, Any] = {}
    for name, df, key in (("users", users, "user_id"), ("items", items, "item_id")):
        counts[name] = len(df)
        counts[f"{name}_empty_id"], counts[f"{name}_duplicate_id"] = _id_problems(df[key])
        df, counts[f"{name}_non_numeric"], counts[f"{name}_non_finite"] = _continuous_problems(df)
    counts["interactions"] = len(inter)
    counts["interactions_empty_id"] = sum(_id_problems(inter[k])[0] for k in ("user_id", "item_id"))
    counts["interactions_unknown_user"] = int((~inter["user_id"].isin(users["user_id"])).sum())
    counts["interactions_unknown_item"] = int((~inter["item_id"].isin(items["item_id"])).sum())
    if "timestamp" in inter:
        inter["timestamp"], counts["interactions_bad_timestamp"] = _timestamps(inter["timestamp"])
    db_path.unlink(missing_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        for table, df in (("users", users), ("items", items), ("interactions", inter)):
            con.register("frame", df)
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")
            con.unregister("frame")
        counts["stored"] = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                            for t in ("users", "items", "interactions")}
    finally:
        con.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: ingest DOC into --db and print the counts as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", type=Path)
    parser.add_argument("--db", type=Path, default=None, help="default: DOC's folder/peer.duckdb")
    args = parser.parse_args(argv)
    counts = ingest(args.doc, args.db or args.doc.parent / "peer.duckdb")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
