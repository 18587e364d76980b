"""DuckDB's failures on the user's data, and their messages read whole.

Why: DuckDB quotes the offending value or key in its messages and cuts long ones at a byte
count, which can fall inside a multi-byte character (text holding U+0080, say). Its Python
binding then cannot decode the message and raises ``UnicodeDecodeError`` instead of
``duckdb.Error`` (found by the fuzzer), and the user got a traceback instead of a line. Every
place that turns a DuckDB failure on the user's data into a located one-line error catches
:data:`ERRORS` and reads the message with :func:`message`: the undecodable bytes are the
message itself, so nothing is lost but the cut character. ``unirec sql`` reads the failures
of the user's own queries (which quote the user's text) the same way.
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
    """The message's first line without DuckDB's error class (``Invalid Input Error: ``);
    the exception's class name when the message is empty."""
    text = message(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__).split("Error: ", 1)[-1]


__all__ = ["ERRORS", "detail", "message"]
