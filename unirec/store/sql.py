"""Quoting for the SQL every stage writes against DuckDB: one rule for names, one for strings.

Field names and values come from the user's document and config, so neither is ever pasted
into SQL unquoted; these two functions are the only quoting in the code.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted SQL identifier: ``a"b`` becomes ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    """A SQL string literal of ``str(value)``: ``it's`` becomes ``'it''s'``."""
    return "'" + str(value).replace("'", "''") + "'"
