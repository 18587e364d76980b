"""Read the input into DuckDB as one JSON value per record, without Python objects.

Two input forms compile to the same thing, a table ``src_<section>(pos, rec JSON)`` per
section, where ``pos`` is the record's 0-based position in its section:

* one JSON document ``{"user_data": [...], "item_data": [...], "interactions": [...]}``,
  parsed by DuckDB in C++ (one JSON object cannot be streamed, so its size is bounded
  by memory);
* a folder holding ``users``, ``items`` and ``interactions`` as newline-delimited JSON
  (``.jsonl``/``.ndjson``) or Parquet, which DuckDB streams: the scale path.

Everything after this module works on those tables alone, so validation and error
messages are the same whatever the input form. A Parquet section's ``src`` is a view that
writes each row as JSON when read, beside a view of its typed columns (``typed_<section>``):
interactions are validated from the typed columns when that is exact
(``features.profile.typed_profile``) and only otherwise read as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from unirec.config import IngestConfig
from unirec.errors import DataError
from unirec.features.profile import type_word
from unirec.registry import did_you_mean
from unirec.store.duckdb_errors import ERRORS, detail, message
from unirec.store.layout import SECTION_TABLES, SECTIONS
from unirec.store.sql import ident, literal

FOLDER_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
ROW_NUMBER = "file_row_number"  # read_parquet's row number column
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Source:
    """What was read: the input form and, per section, the file it came from."""

    path: Path
    form: str  # "document" or "folder"
    files: dict[str, Path]


def load_sources(con: duckdb.DuckDBPyConnection, path: Path, cfg: IngestConfig) -> Source:
    """Create ``src_<section>`` tables from a document or a folder."""
    if not path.exists():
        raise DataError(f"input {str(path)!r} does not exist")
    if path.is_dir():
        files = _folder_files(path)
        for section, file in files.items():
            _load_folder_section(con, section, file)
        return Source(path, "folder", files)
    _load_document(con, path, cfg)
    return Source(path, "document", {s: path for s in SECTIONS})


def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("latin-1")


def _load_document(con: duckdb.DuckDBPyConnection, path: Path, cfg: IngestConfig) -> None:
    first = _first_char(path)
    if first != "{":
        what = "is empty" if not first else f"starts with {first!r}"
        raise DataError(
            f"the document {what}: it must be one JSON object with the sections "
            "user_data, item_data and interactions"
        )
    size = path.stat().st_size
    max_bytes = cfg.max_object_mb * 2**20 if cfg.max_object_mb else size + 2**20
    cols = ", ".join(f"'{s}': 'JSON[]'" for s in SECTIONS)
    try:
        con.execute(
            f"CREATE TEMP TABLE doc AS SELECT * FROM read_json({literal(path)}, "
            f"columns={{{cols}}}, format='unstructured', maximum_object_size={max_bytes})"
        )
    except ERRORS as exc:
        _diagnose_document(con, path, max_bytes, exc)
    n_docs = con.execute("SELECT count(*) FROM doc").fetchone()[0]
    if n_docs != 1:
        raise DataError(
            f"the file holds {n_docs} JSON values: it must be exactly one object "
            "(for one record per line, pass a folder of .jsonl files)"
        )
    present = con.execute(
        "SELECT " + ", ".join(f"{s} IS NOT NULL" for s in SECTIONS) + " FROM doc"
    ).fetchone()
    missing = [s for s, ok in zip(SECTIONS, present, strict=True) if not ok]
    if missing:
        keys = _document_keys(con, path, max_bytes)
        hint = did_you_mean(missing[0], [k for k in keys if k not in SECTIONS])
        raise DataError(
            f"missing section {missing[0]!r}{hint}: the document must hold user_data, "
            "item_data and interactions, each a list of records (an empty list is allowed)"
        )
    for s in SECTIONS:
        con.execute(
            f"CREATE TEMP TABLE src_{s} AS SELECT generate_subscripts({s}, 1) - 1 AS pos, "
            f"unnest({s}) AS rec FROM doc"
        )
    con.execute("DROP TABLE doc")


def _document_keys(con: duckdb.DuckDBPyConnection, path: Path, max_bytes: int) -> list[str]:
    """Top-level keys; parses the file again, so only used on the error path."""
    row = con.execute(
        f"SELECT json_keys(json) FROM read_json_objects({literal(path)}, "
        f"format='unstructured', maximum_object_size={max_bytes}) LIMIT 1"
    ).fetchone()
    return list(row[0]) if row else []


def _diagnose_document(
    con: duckdb.DuckDBPyConnection, path: Path, max_bytes: int, exc: Exception
) -> None:
    """Turn DuckDB's reading error into one sentence naming the section at fault."""
    text = detail(exc)
    if "maximum_object_size" in text or "maximum object size" in text:
        raise DataError(
            f"the document is larger than the JSON object limit ({max_bytes >> 20} MB); "
            "raise it with --set ingest.max_object_mb=N or pass a folder of .jsonl files"
        ) from None
    for s in SECTIONS:
        try:
            con.execute(
                f"SELECT json_type({s}) FROM read_json({literal(path)}, "
                f"columns={{'{s}': 'JSON'}}, format='unstructured', "
                f"maximum_object_size={max_bytes})"
            )
            kind = con.fetchone()[0]
        except ERRORS:
            break  # the file itself does not parse
        if kind not in (None, "ARRAY"):
            raise DataError(
                f"must be a list of records, got {type_word(kind)}", section=s
            ) from None
    raise DataError(f"the document is not valid JSON: {text}") from None


def is_uri(data: object) -> bool:
    """``scheme://...`` (s3a://, hdfs://, file://): a location Spark's Hadoop filesystems
    read, passed through as text (a ``Path`` would fold the ``//``)."""
    return isinstance(data, str) and URI.match(data) is not None


def uri_local_path(uri: str) -> Path | None:
    """The local folder a ``file://`` URI names (None for any other scheme)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def section_files(folder: str, is_file: Callable[[str], bool]) -> dict[str, str]:
    """The file name holding each section in ``folder``, one of FOLDER_SUFFIXES per
    section (``is_file(name)`` asks the folder): the rule for local folders and URIs."""
    files: dict[str, str] = {}
    for section, stem in SECTION_TABLES.items():
        found = [f"{stem}{suf}" for suf in FOLDER_SUFFIXES if is_file(f"{stem}{suf}")]
        if not found:
            names = ", ".join(f"{stem}{suf}" for suf in FOLDER_SUFFIXES)
            raise DataError(
                f"missing section {section!r}: the folder {folder!r} needs one of {names}",
                section=section,
            )
        if len(found) > 1:
            raise DataError(
                f"ambiguous section {section!r}: the folder holds {', '.join(found)}; keep one",
                section=section,
            )
        files[section] = found[0]
    return files


def _folder_files(folder: Path) -> dict[str, Path]:
    names = section_files(str(folder), lambda name: (folder / name).is_file())
    return {section: folder / name for section, name in names.items()}


def _load_folder_section(con: duckdb.DuckDBPyConnection, section: str, file: Path) -> None:
    """One record per line (or Parquet row); ``pos`` keeps the file's order."""
    if file.suffix == ".parquet":
        return _load_parquet_section(con, section, file)
    select = (
        f"SELECT json AS rec FROM read_json_objects({literal(file)}, "
        "format='newline_delimited')"
    )
    try:
        con.execute(f"CREATE TEMP TABLE raw_{section} AS {select}")
    except ERRORS as exc:
        text = detail(exc)
        if "Malformed JSON" in text:
            _locate_bad_line(con, section, file)
        raise DataError(f"{file.name} could not be read: {text}", section=section) from None
    con.execute(
        f"CREATE TEMP TABLE src_{section} AS SELECT rowid AS pos, rec FROM raw_{section} "
        "ORDER BY rowid"
    )
    con.execute(f"DROP TABLE raw_{section}")


def _read(con: duckdb.DuckDBPyConnection, sql: str, file: Path, section: str) -> None:
    """Run ``sql`` (which reads ``file``); a reading error is one line naming the file."""
    try:
        con.execute(sql)
    except ERRORS as exc:
        raise DataError(f"{file.name} could not be read: {detail(exc)}",
                        section=section) from None


def _load_parquet_section(con: duckdb.DuckDBPyConnection, section: str, file: Path) -> None:
    """A Parquet section as two views over the file, read only when queried: ``typed_<s>``
    (``pos`` = the row's number in the file, then the file's own typed columns) and
    ``src_<s>`` (``pos``, the row as a JSON object: what a JSON input would hold). Users
    and items are small and read several times, so their ``src`` is materialised now;
    interactions are profiled from the typed columns (``features.profile.typed_profile``)
    and fall back to ``src`` (``materialize``) only when that cannot be done exactly."""
    reader = f"read_parquet({literal(file)}, file_row_number=true)"
    _read(con, f"DESCRIBE SELECT * FROM read_parquet({literal(file)})", file, section)
    names = [row[0] for row in con.fetchall()]
    if ROW_NUMBER in names or "pos" in names:  # would clash with the views' own columns
        _read(con, f"CREATE TEMP TABLE raw_{section} AS SELECT to_json(t) AS rec "
                   f"FROM read_parquet({literal(file)}) t", file, section)
        con.execute(f"CREATE TEMP TABLE src_{section} AS SELECT rowid AS pos, rec "
                    f"FROM raw_{section} ORDER BY rowid")
        con.execute(f"DROP TABLE raw_{section}")
        return
    cols = ", ".join(ident(n) for n in names)
    con.execute(f"CREATE TEMP VIEW typed_{section} AS SELECT {ROW_NUMBER} AS pos, {cols} "
                f"FROM {reader}")
    packed = ", ".join(f"{ident(n)} := {ident(n)}" for n in names)
    con.execute(f"CREATE TEMP VIEW src_{section} AS SELECT pos, to_json(struct_pack({packed}))"
                f" AS rec FROM typed_{section}")
    if section != "interactions":
        materialize(con, section, file)


def materialize(con: duckdb.DuckDBPyConnection, section: str, file: Path) -> None:
    """Replace the view ``src_<section>`` by a table of the same rows (no-op for a table):
    the JSON rules scan it several times, and a file that cannot be decoded fails here,
    in one line, rather than in the middle of a rule."""
    is_view = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?",
                          [f"src_{section}"]).fetchone()[0]
    if not is_view:
        return
    _read(con, f"CREATE TEMP TABLE mat_{section} AS SELECT pos, rec FROM src_{section}",
          file, section)
    con.execute(f"DROP VIEW src_{section}")
    con.execute(f"ALTER TABLE mat_{section} RENAME TO src_{section}")


def typed_columns(con: duckdb.DuckDBPyConnection, section: str) -> dict[str, str] | None:
    """The Parquet section's column name -> DuckDB type (``typed_<section>``), or None when
    the section was not read from Parquet."""
    rows = con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                       "WHERE table_name = ? AND column_name <> 'pos' "
                       "ORDER BY column_index", [f"typed_{section}"]).fetchall()
    return dict(rows) if rows else None


def drop_sources(con: duckdb.DuckDBPyConnection) -> None:
    """Drop every ``src_``/``typed_`` table or view ``load_sources`` made, and the profiles
    (``prof_``) validation made of them."""
    names = [f"{kind}_{s}" for s in SECTIONS for kind in ("src", "typed", "prof")]
    for name, kind in con.execute(
            "SELECT view_name, 'VIEW' FROM duckdb_views() WHERE list_contains($1, view_name) "
            "UNION ALL SELECT table_name, 'TABLE' FROM duckdb_tables() "
            "WHERE list_contains($1, table_name)", [names]).fetchall():
        con.execute(f"DROP {kind} {ident(name)}")


def json_problem(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """What DuckDB's JSON parser finds wrong with one record's text, e.g. 'unexpected end
    of data at byte 6' (the byte counted from the record's start)."""
    try:
        con.execute("SELECT json(?)", [text]).fetchall()
    except ERRORS as exc:
        found = re.search(r"at byte (\d+) of input: ([^.]*)", message(exc))
        if found:
            return f"{found.group(2)} at byte {found.group(1)}"
        return detail(exc)
    return "not one JSON value"


def not_json(con: duckdb.DuckDBPyConnection, file_name: str, section: str, position: int,
             text: str) -> DataError:
    """The one error for a line that is not JSON, located by record (blank lines are not
    records); the Spark engine raises it too, so both engines name the same line alike."""
    return DataError(f"{file_name} could not be read: not valid JSON "
                     f"({json_problem(con, text)})", section=section, position=position)


def _locate_bad_line(con: duckdb.DuckDBPyConnection, section: str, file: Path) -> None:
    """On the error path only: DuckDB's reader names a file line and a byte of whichever
    chunk failed first; find the first record that is not JSON (the reader again, skipping
    errors as NULL) and raise ``not_json`` for it."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _lines AS SELECT json FROM read_json_objects("
                f"{literal(file)}, format='newline_delimited', ignore_errors=true)")
    row = con.execute("SELECT min(rowid) FROM _lines WHERE json IS NULL").fetchone()
    con.execute("DROP TABLE _lines")
    if row[0] is None:
        return
    pos = int(row[0])
    with open(file, encoding="utf-8", errors="replace") as f:
        records = (line for line in f if line.strip())
        text = next((line.rstrip("\r\n") for i, line in enumerate(records) if i == pos), "")
    raise not_json(con, file.name, section, pos, text)
