"""Render a Polars frame for people (table) or programs (json, csv)."""

from __future__ import annotations

import polars as pl


def _flatten_nested(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no nested values: lists and structs become JSON text, vectorized."""
    nested = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return frame
    return frame.with_columns(
        pl.struct(pl.col(c).alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(c)
        for c in nested
    )


def _unnest_structs(frame: pl.DataFrame) -> pl.DataFrame:
    """People read `categorical.country` columns better than struct literals."""
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
