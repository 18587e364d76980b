"""Ctrl-C during a DuckDB query: recognised, and honoured.

Why: DuckDB's Python binding rewrites a SIGINT that it notices inside a query as
``RuntimeError("Query interrupted")`` where Python would raise ``KeyboardInterrupt`` (found
by CI: ``unirec tune`` stopped by Ctrl-C while a trial read its store crashed instead of
keeping the best so far); :func:`interrupted` recognises both. And it does not always notice:
while its main thread waits for the worker threads, a SIGINT only marks Python's flag, so on
a busy machine (three queries on two cores: most of them) a long query ran on through every
Ctrl-C. :func:`interruptible` cancels the query from a watcher thread the moment the signal
arrives (Python's C-level handler writes it to a wakeup pipe), so Ctrl-C stops
``unirec sql`` at once, loaded or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


def interrupted(exc: BaseException) -> bool:
    """True when ``exc`` is a Ctrl-C: Python's own, or DuckDB's rewrite of one that landed
    inside a query (``RuntimeError("Query interrupted")``; ``duckdb.InterruptException``
    when a query is cancelled by ``Connection.interrupt``)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if type(exc) is RuntimeError:
        return str(exc) == "Query interrupted"
    return type(exc).__name__ == "InterruptException" and "duckdb" in type(exc).__module__


@contextlib.contextmanager
def interruptible(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Within: a SIGINT also cancels ``con``'s running query (``con.interrupt()``), which
    then raises an error :func:`interrupted` recognises, while Python's own handler still
    raises ``KeyboardInterrupt`` as usual. Does nothing off the main thread, or where
    someone else (an asyncio loop) owns the signal wakeup fd."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    try:
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (OSError, ValueError):  # a platform without it, or not the main interpreter
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            got = os.read(read, 64)
            if signal.SIGINT in got and not done.is_set():
                con.interrupt()

    watcher = threading.Thread(target=watch, name="unirec-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(-1)
        done.set()
        os.write(write, b"\0")  # wakes the watcher to see done
        watcher.join()
        os.close(read)
        os.close(write)


__all__ = ["interrupted", "interruptible"]
