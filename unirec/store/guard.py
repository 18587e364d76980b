"""What featurize may replace, and who may write a store at a time.

A store folder is replaced whole (``atomic.building``), so the one question that protects a
user's files is *what is at ``--store`` now*. Only three things may be replaced: nothing, an
empty folder, or a unirec store (recognised by the marker file every store writes, or by the
manifest + database pair of stores written before the marker existed). Anything else -- a
folder of the user's files, ``--store .``, the folder holding the input -- is refused with one
line, before any work starts.

Writers (featurize, fit) of one store take an OS lock (``fcntl.flock``) on a file beside it,
so a second writer is refused and told which process holds the store, instead of the later
swap silently winning. The kernel drops the lock when its holder dies, even by kill -9.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from unirec.errors import StoreError

MARKER = ".unirec-store"
MARKER_TEXT = json.dumps({"unirec_store": 1}) + "\n"


def resolve_store(store: str | Path) -> Path:
    """The real folder a ``--store`` names: a symlink is followed, so the new store is built
    beside its target and the link keeps pointing at it (no stray link, no replaced link)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(store))))


def is_store(path: Path) -> bool:
    """True for a folder featurize wrote (marker file, or a pre-marker manifest + database)."""
    if (path / MARKER).is_file():
        return True
    manifest = path / "manifest.json"
    if not (manifest.is_file() and (path / "features.duckdb").is_file()):
        return False
    try:
        return "store_format" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False


def check_replaceable(target: Path, inputs: list[Path]) -> None:
    """Refuse (``StoreError``) to replace ``target`` unless it is absent, empty or a store,
    and never when it holds one of ``inputs`` or the current directory."""
    if not os.path.lexists(target):
        return
    where = repr(str(target))
    if not target.is_dir():
        raise StoreError(f"--store {where} is a file, not a unirec store: refusing to replace "
                         "it (choose a folder name that does not exist yet)")
    for data in inputs:
        real = resolve_store(data)
        if real == target or target in real.parents:
            raise StoreError(f"--store {where} holds the input {str(data)!r}: featurize would "
                             "delete its own input; choose a store folder outside it")
    cwd = resolve_store(Path.cwd())
    if cwd == target or target in cwd.parents:
        raise StoreError(f"--store {where} is the current folder (or holds it): refusing to "
                         "replace it; choose a new store folder such as ./unirec-store")
    if is_store(target):
        return
    first = next(iter(sorted(p.name for p in target.iterdir())), None)
    if first is not None:
        raise StoreError(f"--store {where} is not a unirec store (it holds {first!r}, ...): "
                         "refusing to replace it; choose a new folder, or delete it yourself")


def lock_path(target: Path) -> Path:
    """The lock file of a store: beside it, since featurize replaces the folder itself."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def store_lock(target: Path, what: str) -> Iterator[None]:
    """Hold the store's write lock for ``what`` ("featurize", "fit"); refuse if another
    process holds it, naming that process. The lock file is removed on release."""
    path = lock_path(target)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock store {str(target)!r} for writing ({str(path)!r}: "
                             f"{exc.strerror}); its folder must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise StoreError(f"store {str(target)!r} is being written by {_holder(path)}: "
                             "wait for it to finish (one writer at a time)") from None
        # the holder before us may have unlinked the file between our open and our lock
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        pid, _, what = path.read_text().strip().partition(" ")
    except OSError:
        return "another process"
    return f"unirec {what or 'process'} (pid {pid})" if pid.isdigit() else "another process"
