"""A content-addressed on-disk cache of embedding vectors.

Re-featurizing unchanged text or images must cost nothing, so every vector a frozen model
computes is stored under a key the caller derives from everything that determines it
(model id and content for text; model id, path, size and mtime for images). The cache never
hashes anything itself: callers own their key recipe.

Layout: ``root/namespace/part-<uuid>.parquet``, each part a Parquet file with columns
``key`` (hex digest string) and ``vector`` (fixed-size float32 array). Each ``add`` writes
one new part (written to a temporary name, then renamed), so a crash never leaves a
half-written part and concurrent writers never touch each other's files.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from unirec.errors import StoreError
from unirec.store.atomic import write_file

_PART_GLOB = "part-*.parquet"


class EmbeddingCache:
    """Float32 vectors keyed by string, stored as Parquet parts under ``root/namespace``.

    Parameters
    ----------
    root
        Cache folder (the store's ``cache/``); it need not exist yet.
    namespace
        Sub-folder holding one kind of vector. All vectors in a namespace have the same
        dimension: use one namespace per model (e.g. ``text-<model>``).
    """

    def __init__(self, root: str | os.PathLike[str], namespace: str) -> None:
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise ValueError(f"bad cache namespace {namespace!r}: use a plain folder name")
        self.root = Path(root)
        self.namespace = namespace
        self.path = self.root / namespace

    @classmethod
    def for_model(cls, root: str | os.PathLike[str], kind: str, model_id: str
                  ) -> EmbeddingCache:
        """The namespace of ``kind`` ("text"/"image") vectors of one model: featurize writes
        it, serving new records reads it, so both must name it the same way."""
        return cls(root, f"{kind}-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}")

    def parts(self) -> list[Path]:
        """The finished part files, sorted (temporary files are never listed)."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob(_PART_GLOB))

    @property
    def dim(self) -> int | None:
        """Vector dimension stored in this namespace, or None while it is empty."""
        parts = self.parts()
        if not parts:
            return None
        with open(parts[0], "rb") as f:  # a path would be globbed: "[1]" in a store's name
            dtype = pl.read_parquet_schema(f)["vector"]
        return int(dtype.size) if isinstance(dtype, pl.Array) else None

    def __len__(self) -> int:
        """Number of distinct keys stored."""
        parts = self.parts()
        if not parts:
            return 0
        keys = pl.scan_parquet(parts, glob=False).select(pl.col("key").n_unique())
        return int(keys.collect().item())

    def lookup(self, keys: Sequence[str], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Find stored vectors for ``keys``.

        Parameters
        ----------
        keys
            Keys to look up; duplicates are allowed.
        dim
            Width of the returned array when the cache is empty (default 0). When given and
            the cache holds another dimension, raise ``StoreError``.

        Returns
        -------
        found : np.ndarray of bool, shape (n,)
            True where a vector was stored under the key.
        vectors : np.ndarray of float32, shape (n, d)
            The stored vectors, zeros where ``found`` is False.
        """
        n = len(keys)
        stored_dim = self.dim
        if stored_dim is not None and dim is not None and stored_dim != dim:
            raise self._dim_error(dim)
        width = stored_dim if stored_dim is not None else (dim or 0)
        found = np.zeros(n, dtype=bool)
        vectors = np.zeros((n, width), dtype=np.float32)
        if n == 0 or stored_dim is None:
            return found, vectors
        wanted = pl.LazyFrame({"key": pl.Series(list(keys), dtype=pl.String)}).with_row_index("row")
        hits = (
            wanted.join(pl.scan_parquet(self.parts(), glob=False), on="key", how="inner")
            # The same key may sit in two parts (two runs raced); any copy will do.
            .unique(subset="row", keep="any")
            .select("row", "vector")
            .collect()
        )
        if hits.height:
            rows = hits["row"].to_numpy()
            found[rows] = True
            vectors[rows] = hits["vector"].to_numpy().astype(np.float32, copy=False)
        return found, vectors

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Store ``vectors[i]`` under ``keys[i]`` as one new part; return its path.

        Writes nothing (returns None) for an empty batch. Raises ``StoreError`` when the
        vectors' dimension differs from the one already stored in this namespace.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(
                f"add() needs one row per key: got {len(keys)} keys and an array of shape "
                f"{vectors.shape}"
            )
        if not len(keys):
            return None
        stored_dim = self.dim
        if stored_dim is not None and stored_dim != vectors.shape[1]:
            raise self._dim_error(vectors.shape[1])
        frame = pl.DataFrame(
            {
                "key": pl.Series(list(keys), dtype=pl.String),
                "vector": pl.Series(np.ascontiguousarray(vectors)),
            }
        ).unique(subset="key", keep="first", maintain_order=True)
        return self._write_part(frame)

    def compact(self) -> int:
        """Merge all parts into one, dropping duplicate keys; return the number of keys.

        Not safe while another process reads or writes this namespace: run it between
        featurize runs.
        """
        old = self.parts()
        if len(old) <= 1:
            return len(self)
        frame = pl.scan_parquet(old, glob=False).unique(subset="key", keep="any").collect()
        self._write_part(frame)
        for part in old:
            part.unlink()
        return frame.height

    def _write_part(self, frame: pl.DataFrame) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"part-{uuid.uuid4().hex}.parquet"
        write_file(final, frame.write_parquet)
        return final

    def _dim_error(self, got: int) -> StoreError:
        return StoreError(
            f"embedding cache {self.path} holds {self.dim}-d vectors but was given {got}-d "
            "ones (use one cache namespace per model, or delete that folder)"
        )


def unreadable(vectors: np.ndarray) -> np.ndarray:
    """(n,) bool: the rows cached as NaN, i.e. files that could not be read. They stay
    unreadable until the file changes (its key changes), so nobody retries them."""
    return np.isnan(vectors).any(axis=1) if vectors.ndim == 2 and vectors.shape[1] else \
        np.zeros(len(vectors), bool)


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when present, else 'cpu'. Called only when a model must load, so a
    fully cached featurize never imports torch."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
