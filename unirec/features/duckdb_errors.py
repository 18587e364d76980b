"""DuckDB's failures on the user's data, and their messages read whole.

Why: DuckDB quotes the offending value or key in its messages and cuts long ones at a byte
count, which can fall inside a multi-byte character (text holding U+0080, say). Its Python
binding then cannot decode the message and raises ``UnicodeDecodeError`` instead of
``duckdb.Error`` (found by the fuzzer), and the user got a traceback instead of a line. Every
place that turns a DuckDB failure on the user's data into a located one-line error catches
:data:`ERRORS` and reads the message with :func:`message`: the undecodable bytes are the
message itself, so nothing is lost but the cut character.

Ctrl-C is the other message DuckDB rewrites: a SIGINT that lands inside a query is taken by
the binding, which cancels the query and raises ``RuntimeError("Query interrupted")`` where
Python would have raised ``KeyboardInterrupt`` (found by CI: ``unirec tune`` stopped by
Ctrl-C while a trial read its store crashed instead of keeping the best so far). Code that
stops cleanly on Ctrl-C asks :func:`interrupted` too.
"""

from __future__ import annotations

import duckdb

ERRORS: tuple[type[Exception], ...] = (duckdb.Error, UnicodeDecodeError)


def message(exc: BaseException) -> str:
    """DuckDB's whole message for ``exc`` (the cut character shown as U+FFFD)."""
    if isinstance(exc, UnicodeDecodeError) and isinstance(exc.object, bytes | bytearray):
        return bytes(exc.object).decode("utf-8", "replace")
    return str(exc)


def detail(exc: BaseException) -> str:
    """The message's first line without DuckDB's error class (``Invalid Input Error: ``)."""
    return message(exc).splitlines()[0].split("Error: ", 1)[-1]


def interrupted(exc: BaseException) -> bool:
    """True when ``exc`` is a Ctrl-C: Python's own, or DuckDB's rewrite of one that landed
    inside a query (``RuntimeError("Query interrupted")``; ``duckdb.InterruptException``
    for ``Connection.interrupt``)."""
    return (isinstance(exc, KeyboardInterrupt | duckdb.InterruptException)
            or (type(exc) is RuntimeError and str(exc) == "Query interrupted"))


__all__ = ["ERRORS", "detail", "interrupted", "message"]
