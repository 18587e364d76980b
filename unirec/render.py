"""Render a Polars frame for people (table) or programs (json, csv).

``render_columns`` does the same for the serving commands' small answers without importing
polars: ``unirec recommend`` must start in a fraction of a second.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


def _flatten_nested(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no nested values: lists and structs become JSON text, vectorized."""
    import polars as pl

    nested = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return frame
    return frame.with_columns(
        pl.struct(pl.col(c).alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(c)
        for c in nested
    )


def _unnest_structs(frame: pl.DataFrame) -> pl.DataFrame:
    """People read `categorical.country` columns better than struct literals."""
    import polars as pl

    structs = [c for c, t in frame.schema.items() if isinstance(t, pl.Struct)]
    if not structs:
        return frame
    renamed = frame.with_columns(
        pl.col(c).struct.rename_fields([f"{c}.{f.name}" for f in frame.schema[c].fields])
        for c in structs
    )
    return renamed.unnest(structs)


def render(frame: pl.DataFrame, fmt: str = "table") -> str:
    """The text printed by the CLI, ending with a newline."""
    import polars as pl

    if fmt == "json":
        return frame.write_json() + "\n"
    if fmt == "csv":
        return _flatten_nested(frame).write_csv()
    with pl.Config(
        tbl_rows=50, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160,
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
    ):
        text = str(_unnest_structs(frame))
    if frame.height > 50:
        text += f"\n({frame.height} rows; use LIMIT, or --format csv for all)"
    return text + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; NaN -> None (JSON has no NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value + 0.0:.4f}".replace("-0.0000", "0.0000")  # no negative zero
    return str(value)


def render_columns(columns: dict[str, Sequence[Any]], fmt: str = "table") -> str:
    """A small answer (a few columns, a few hundred rows) as table, json or csv text."""
    names = list(columns)
    rows = [[_plain(columns[c][i]) for c in names] for i in range(len(columns[names[0]]))] \
        if names else []
    if fmt == "json":
        return json.dumps([dict(zip(names, r, strict=True)) for r in rows]) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in r] for r in rows])
        return buf.getvalue()
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(n)] + [len(r[j]) for r in cells]) for j, n in enumerate(names)]
    numeric = [all(isinstance(_plain(v), (int, float)) or _plain(v) is None
                   for v in columns[n]) for n in names]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric, strict=True)).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    return "\n".join(out) + "\n"
