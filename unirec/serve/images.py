"""Which image files an HTTP client may make the server read: one rule, one place.

A record POSTed to ``/recommend`` or ``/similar`` may name image files. The server reads only
files under the folders it was told to serve images from: the store's input folder (where
featurize found the catalogue's images) and any ``--images DIR``. A path is resolved the way
the featurize ops resolve it (relative to the input folder), symlinks followed, and refused
when it contains ``..``, lands outside those folders, or is not a regular file (a device, a
FIFO). A client can also send the image itself: ``{"base64": "..."}`` is decoded into a
server-owned folder, named by its content, and read from there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from unirec.errors import QueryError
from unirec.store import Store
from unirec.store.atomic import write_file

MAX_IMAGE_BYTES = 20 << 20


class ImageFolders:
    """The folders a server may read images from, and where sent bytes are kept."""

    def __init__(self, store: str | Path, extra: list[str | Path] = (), uploads: Path | None
                 = None) -> None:
        manifest = Store(store).manifest
        src = Path(manifest["input"]["path"])
        self.base = os.path.realpath(src if manifest["input"]["form"] == "folder"
                                     else src.parent)
        self.uploads = os.path.realpath(uploads) if uploads is not None else None
        self.roots = [self.base, *(os.path.realpath(p) for p in extra),
                      *([self.uploads] if self.uploads else [])]

    def confine(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """``record`` with every image value replaced by its checked real path."""
        images = record.get("image")
        if not isinstance(images, dict):
            return record
        checked = {name: None if value is None else self.path(value, f"{where}: image.{name}")
                   for name, value in images.items()}
        return {**record, "image": checked}

    def path(self, value: Any, where: str) -> str:
        """The real path the server may read for ``value`` (a path, or ``{"base64": ...}``);
        ``QueryError`` (HTTP 400) for anything else."""
        if isinstance(value, dict) and set(value) == {"base64"}:
            return self._store_bytes(value["base64"], where)
        if not isinstance(value, str) or not value or "\0" in value:
            raise QueryError(f"{where}: must be a path under the served image folders or "
                             '{"base64": "..."}')
        if ".." in PurePosixPath(value).parts:
            raise QueryError(f"{where}: '..' is not allowed in an image path")
        real = os.path.realpath(os.path.join(self.base, value))
        if not any(real == root or real.startswith(root + os.sep) for root in self.roots):
            raise QueryError(f"{where}: {value!r} is outside the folders this server serves "
                             "images from (send the image as {\"base64\": \"...\"})")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return real  # inside, but absent: a missing image, as featurize treats one
        if not stat.S_ISREG(mode):
            raise QueryError(f"{where}: {value!r} is not a regular file")
        return real

    def _store_bytes(self, text: Any, where: str) -> str:
        if self.uploads is None:
            raise QueryError(f"{where}: this server takes no image bytes")
        if not isinstance(text, str) or len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise QueryError(f"{where}: base64 must be a string of at most "
                             f"{MAX_IMAGE_BYTES >> 20} MiB of image")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise QueryError(f"{where}: base64 does not decode") from None
        path = os.path.join(self.uploads, hashlib.sha256(data).hexdigest())
        if not os.path.isfile(path):
            write_file(path, lambda tmp: tmp.write_bytes(data))
        return path
