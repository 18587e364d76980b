"""The feature store: the only door between featurize, fit and serve.

A store is a folder (default ``./unirec-store``) holding ``features.duckdb`` (tables that
any DuckDB client can open), ``manifest.json`` (what was compiled, from what, how) and
``report.json`` (what featurize saw, kept and dropped). ``Store`` opens the database
read-only: a query can never change it. Opening does change the folder around it in one case:
a swap that a killed ``featurize`` or ``fit`` left half done is undone (the previous folder is
renamed back) and dead builds are deleted (``unirec.store.atomic.recover``), so a reader never
finds the store missing.

Importing the package costs no DuckDB or Polars (they load when a store is opened), so its
light modules (``layout``, ``csr``, ``sql``, ``atomic``) serve the known-user path too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unirec.errors import StoreError
from unirec.registry import did_you_mean
from unirec.store.atomic import recover
from unirec.store.csr import pad_left
from unirec.store.interrupt import interrupted, interruptible

if TYPE_CHECKING:
    import duckdb
    import polars as pl

DEFAULT_STORE = "unirec-store"
DB_FILE = "features.duckdb"
STORE_FORMAT = 2
"""Version of the store layout; bumped when a reader of the old layout would misread the new.
2: histories by reference (``user_sequences``, ``tensors/sequences.safetensors``, samples keep
``history_end``; shards hold no history)."""
SEQUENCES_FILE = "tensors/sequences.safetensors"
# Every read of the store goes through a connection that can reach nothing but the database
# file: DuckDB's own switches, set when the database starts and then locked, so no statement
# (COPY TO, EXPORT, read_text/read_csv/glob, ATTACH, INSTALL/LOAD, CREATE SECRET, SET) can
# read or write another file, fetch an extension or undo the settings.
SANDBOX: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
_REFUSED = ("Permission Error", "configuration has been locked", "disabled through configuration")


class Store:
    """A read-only view of a compiled store.

    Parameters
    ----------
    path:
        The store folder written by ``unirec featurize``.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        recover(self.path.absolute())
        if not (self.path / DB_FILE).is_file() or not (self.path / "manifest.json").is_file():
            raise StoreError(
                f"no feature store at {str(self.path)!r}: run `unirec featurize DATA "
                f"--store {self.path}` first"
            )

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def manifest(self) -> dict[str, Any]:
        """The compiled plan (manifest.json)."""
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def report(self) -> dict[str, Any]:
        """What featurize saw, kept, dropped and warned about (report.json)."""
        return json.loads((self.path / "report.json").read_text())

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only, sandboxed DuckDB connection to ``features.duckdb`` (see ``SANDBOX``)."""
        import duckdb

        from unirec.store.duckdb_errors import ERRORS, detail

        try:
            con = duckdb.connect(str(self.path / DB_FILE), read_only=True, config=SANDBOX)
        except ERRORS as exc:
            raise StoreError(f"cannot open {self.path / DB_FILE}: {detail(exc)}") from None
        try:
            yield con
        finally:
            con.close()

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query and return a Polars DataFrame.

        Writes are refused: the store changes only through featurize and fit. So is anything
        outside the database: files, extensions, secrets, settings (``SANDBOX``).
        """
        import polars as pl

        from unirec.store.duckdb_errors import ERRORS, detail, message

        with self.connect() as con, interruptible(con):
            try:
                rel = con.sql(query, params=params) if params else con.sql(query)
                return rel.pl() if rel is not None else pl.DataFrame()
            except ERRORS as exc:
                if interrupted(exc):  # Ctrl-C cancelled it (store.interrupt)
                    raise KeyboardInterrupt from None
                msg = detail(exc)
                if any(word in message(exc) for word in _REFUSED):
                    raise StoreError(
                        "refused: `unirec sql` reads only the store's tables (no files, "
                        f"extensions, secrets or settings): {msg}") from None
                if "read-only" in msg or "read only" in msg:
                    raise StoreError(
                        "the store is read-only here: `unirec sql` only reads "
                        "(re-run `unirec featurize` to change the data)"
                    ) from None
                raise StoreError(f"query failed: {msg}") from None

    def tables(self) -> list[str]:
        """Table names, sorted."""
        return self.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "ORDER BY table_name"
        )["table_name"].to_list()

    def counts(self) -> dict[str, int]:
        """Row count per table."""
        tables = self.tables()
        if not tables:
            return {}
        union = " UNION ALL ".join(
            f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\"" for t in tables
        )
        rows = self.sql(union).rows()
        return dict(rows)

    def schema(self, table: str) -> pl.DataFrame:
        """Columns and types of ``table``."""
        tables = self.tables()
        if table not in tables:
            raise StoreError(
                f"no table {table!r} in the store{did_you_mean(table, tables)}; "
                f"tables: {', '.join(tables)}"
            )
        return self.sql(
            "SELECT column_name AS column, data_type AS type, is_nullable AS nullable "
            "FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        )


def write_table(path: str | Path, name: str, data: Any,
                select: str = "SELECT * FROM _new") -> int:
    """Create or replace table ``name`` in the store at ``path`` from Arrow ``data`` (a table
    or a ``RecordBatchReader``, streamed), shaped by ``select`` over it (``_new``); returns the
    row count. The one writer of the tables that ``fit`` (embeddings) and ``recommend
    --all-users --explain`` (explanations) add after featurize; one statement, so a reader
    sees the old table or the new one, never half.
    """
    con = connect_for_write(Path(path) / DB_FILE)
    try:
        con.register("_new", data)
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS {select}')
        return int(con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0])
    finally:
        con.close()


STORAGE_VERSION = "v1.0.0"
"""The DuckDB storage format ``features.duckdb`` is written in: the oldest DuckDB 2 can write,
so DuckDB 1.0 and every later client opens the store (DuckDB 2's own format, v2.0.0, is
refused by all of 1.x). Recorded in ``manifest.json`` as ``duckdb_storage``."""

OLDEST_DUCKDB = "1.0.0"
"""The oldest DuckDB tested to open a store (tests/test_install.py, docs/store.md)."""


def connect_for_write(path: str | Path) -> duckdb.DuckDBPyConnection:
    """The one way unirec opens ``features.duckdb`` for writing (featurize, fit).

    A new file gets ``STORAGE_VERSION``; an existing one keeps the format it has. DuckDB
    before 1.2 has no such setting, and writes v1.0.0 anyway.
    """
    import duckdb

    major_minor = tuple(int(p) for p in duckdb.__version__.split(".")[:2])
    config = {"storage_compatibility_version": STORAGE_VERSION} if major_minor >= (1, 2) \
        else {}
    return duckdb.connect(str(path), config=config)


def storage_version(con: duckdb.DuckDBPyConnection) -> str:
    """The storage format of ``con``'s database file as DuckDB reports it ("v1.0.0+")."""
    import duckdb

    try:
        row = con.execute("SELECT tags['storage_version'] FROM duckdb_databases() "
                          "WHERE database_name = current_database()").fetchall()
    except duckdb.Error:  # DuckDB < 1.2 reports no tags: it writes v1.0.0 only
        return STORAGE_VERSION + "+"
    value = row[0][0] if row else None
    if isinstance(value, list):  # map extraction returns a list before DuckDB 1.1
        value = value[0] if value else None
    return str(value or STORAGE_VERSION + "+")


def serving_histories(store: Store, length: int, users: np.ndarray | None = None,
                      con: Any = None) -> np.ndarray:
    """(n_users, L): each user's last L items over every non-test interaction (every type
    and weight, as a training history; ``user_sequences``), most recent last. What a
    recommendation made now should condition on (test stays unseen): what fit embeds users
    with, what explanations and the explorer show. Here, not in train/, so the
    torch-free serving path can read it too.

    With ``users`` (user indices), only theirs: (len(users), L), row r for ``users[r]``, so
    explaining one user reads one user's samples, not everyone's. ``con``: an open
    connection to the store to use (opening one costs tens of ms).
    """
    if con is None:
        with store.connect() as con:
            return serving_histories(store, length, users, con)
    where, params = "TRUE", []
    if users is not None:
        uniq, inverse = np.unique(np.asarray(users, np.int64), return_inverse=True)
        where = "list_contains(?, user_index)"
        params = [uniq.tolist()]
    n_users = con.execute("SELECT count(*) + 1 FROM user_map").fetchall()[0][0]
    # the non-test prefix of the user's sequence (store format 2), its last `length` items
    rows = con.sql(
        f"SELECT user_index, items[greatest(serve_length - {int(length)} + 1, 1):serve_length]"
        f" AS h FROM user_sequences WHERE {where}", params=params or None).to_arrow_table()
    idx = rows.column("user_index").to_numpy()
    if users is not None:
        idx = np.searchsorted(uniq, idx)
    out = np.zeros((n_users if users is None else len(uniq), length), np.int64)
    lists = rows.column("h").combine_chunks()
    offsets = lists.offsets.to_numpy()
    out[idx] = pad_left((offsets - offsets[0], lists.flatten().to_numpy()), length)
    return out if users is None else out[inverse]
