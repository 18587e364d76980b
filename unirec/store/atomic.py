"""Write whole or not at all: a directory built beside its target and swapped in only when
complete (``building``), and a file written to a temporary name and renamed over its target
(``write_file``). Every writer of the store, the model folder, checkpoints and caches uses
one of the two.

A featurize that fails or is killed leaves the previous store exactly as it was: all
writing happens in ``.<name>.building-<pid>-<token>`` next to the target, and the swap is
a single ``renameat2(RENAME_EXCHANGE)`` on Linux (two renames elsewhere, with recovery).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: Path) -> None:
    """Undo a swap interrupted between its two renames, and sweep dead builds."""
    parent = target.parent
    if not parent.is_dir():
        return
    backup = parent / f".{target.name}.previous"
    if backup.exists() and not target.exists():
        os.rename(backup, target)
    for stale in parent.glob(f".{target.name}.building-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def building(target: Path) -> Iterator[Path]:
    """Yield an empty folder; on clean exit it replaces ``target``, on error it vanishes."""
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = target.parent / f".{target.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_tree(tmp)
    if not target.exists():
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old store
    else:
        backup = target.parent / f".{target.name}.previous"
        shutil.rmtree(backup, ignore_errors=True)
        os.rename(target, backup)
        os.rename(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush the new files before the swap makes them the store."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_file(path: str | os.PathLike[str], write: Callable[[Path], object], *,
               durable: bool = False) -> None:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it,
    which then replaces ``path`` in one rename (readers see the old file or the new one).
    With ``durable`` the data is fsynced first. On any error the temporary file goes and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` at ``dst`` (copy it where links fail: another filesystem, say).
    Only for files that are replaced by rename, never written in place: a linked file is
    the same bytes in both places."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
