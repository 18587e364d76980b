"""Pack the ``samples`` table into webdataset tar shards of blocks, and read them back.

One sample per tar entry reads ~200x slower than a block of ~1,000 samples stored as
arrays, so every tar entry here is a *block*: key ``b{global_block:09d}`` holding one
``.npy`` column per field, ``n`` samples long:

=================  =======  ====================================================
member             dtype    meaning
=================  =======  ====================================================
``user.npy``       int32    user index
``item.npy``       int32    item index
``weight.npy``     float32  sample weight
``time.npy``       int64    sample time, epoch microseconds
``hend.npy``       int64    history end: offset in the store's user sequence
``hlen.npy``       int32    history length (the items just before ``hend``)
``position.npy``   int64    the sample's ``position`` in ``samples`` (its id)
=================  =======  ====================================================

The history itself is not in the shards: it is ``items[hend - hlen:hend]`` of
``tensors/sequences.safetensors`` (``unirec.model.inputs.gather_history``), 12 bytes a
sample instead of ``4 * history_length``.

Shard ``{split}-{i:06d}.tar`` holds blocks ``i * shard_blocks`` to
``(i + 1) * shard_blocks - 1``; every block has ``block_size`` samples but the last.
Shards are plain ustar files written here a shard at a time (headers of repeated shapes
cached), so writing costs a few microseconds per member, not a webdataset sample dict per
block. webdataset (and with it torch) is imported lazily, for reading only.
"""

from __future__ import annotations

import functools
import io
import math
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from unirec.store.arrow import to_numpy

FIELDS: dict[str, str] = {
    "user": "int32", "item": "int32", "weight": "float32", "time": "int64",
    "hend": "int64", "hlen": "int32", "position": "int64",
}
"""Block member name (without ``.npy``) -> numpy dtype."""

SHUFFLE_KEY = "hash(position, $seed::BIGINT)"
"""The train shards' order: a seeded hash of the sample's position (then the position)."""

SAMPLE_COLUMNS = """
user_index::INTEGER AS user, item_index::INTEGER AS item, weight::FLOAT AS weight,
epoch_us(time)::BIGINT AS time, history_end::BIGINT AS hend,
history_length::INTEGER AS hlen, position::BIGINT AS position
"""
"""A ``samples`` row as the block columns (``FIELDS``), in SQL over samples' columns."""
_QUERY = "SELECT " + SAMPLE_COLUMNS + " FROM samples WHERE split = $split"


def write_shards(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    split: str,
    *,
    block_size: int = 1024,
    shard_blocks: int = 64,
    seed: int = 0,
    shuffle: bool = True,
) -> list[Path]:
    """Write one split of ``samples`` as tar shards of packed blocks; return the shard paths.

    Rows stream from DuckDB as Arrow record batches, so memory holds about one shard,
    whatever the table's size. With ``shuffle`` the order is a global, seeded permutation
    (``ORDER BY hash(position, seed)``, done out of core by DuckDB): blocks then mix users
    and times, and a reader only needs to shuffle shard order. Tars carry mtime 0, so the
    same table and seed give byte-identical shards. An empty split writes no shard.
    """
    return write_split(con, out_dir, split, block_size=block_size, shard_blocks=shard_blocks,
                       seed=seed, shuffle=shuffle)["paths"]


def write_split(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    split: str,
    *,
    block_size: int = 1024,
    shard_blocks: int = 64,
    seed: int = 0,
    shuffle: bool = True,
) -> dict[str, Any]:
    """``write_shards``, returning with the paths what ``shard_summary`` would count in them
    (``n_samples``, ``n_blocks``, ``n_shards``, ``bytes``), known while writing: reading
    every tar header back cost as much as writing the shards."""
    if not split.isidentifier():
        raise ValueError(f"split must be a plain name, got {split!r}")
    if block_size < 1 or shard_blocks < 1:
        raise ValueError("block_size and shard_blocks must be >= 1")
    query = _QUERY + (f" ORDER BY {SHUFFLE_KEY}, position" if shuffle else " ORDER BY position")
    params: dict[str, Any] = {"split": split} | ({"seed": seed} if shuffle else {})
    rows = block_size * shard_blocks
    reader = con.sql(query, params=params).to_arrow_reader(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    n_samples = n_blocks = n_bytes = 0
    try:
        for shard in rechunk(_batches(reader), rows):
            path = write_shard(out_dir, split, len(paths), shard, block_size, shard_blocks)
            paths.append(path)
            n = len(shard["position"])
            n_samples, n_blocks, n_bytes = (n_samples + n, n_blocks + -(-n // block_size),
                                            n_bytes + path.stat().st_size)
    finally:
        reader.close()
    return {"paths": paths, "n_samples": n_samples, "n_blocks": n_blocks,
            "n_shards": len(paths), "bytes": n_bytes}


def write_shard(out_dir: Path, split: str, index: int, shard: dict[str, np.ndarray],
                block_size: int, shard_blocks: int) -> Path:
    """Write shard ``index`` of ``split``: its rows (``FIELDS`` columns, at most
    ``block_size * shard_blocks``, rows ``index * block_size * shard_blocks`` on of the
    split's order) as one tar. Any process may write any shard: the Spark engine's
    executors write theirs in parallel, byte-identical to ``write_shards``'s."""
    path = out_dir / f"{split}-{index:06d}.tar"
    with open(path, "wb") as out:
        out.write(_shard_bytes({k: shard[k] for k in FIELDS}, block_size,
                               index * shard_blocks))
    return path


def _shard_bytes(shard: dict[str, np.ndarray], block_size: int, first: int) -> bytes:
    """One whole tar file: blocks ``first, first + 1, ...`` of ``block_size`` rows."""
    parts: list[bytes | memoryview] = []
    total = 0
    n = len(shard["position"])
    for b, start in enumerate(range(0, n, block_size)):
        key = f"b{first + b:09d}"
        for name, column in shard.items():
            part = column[start:start + block_size]
            header = _npy_header_bytes(part.dtype.str, len(part))
            size = len(header) + part.nbytes
            pad = -size % tarfile.BLOCKSIZE
            parts += [_tar_header(f"{key}.{name}.npy", size), header, memoryview(part).cast("B"),
                      b"\0" * pad]
            total += tarfile.BLOCKSIZE + size + pad
    total += 2 * tarfile.BLOCKSIZE
    parts.append(b"\0" * (2 * tarfile.BLOCKSIZE + -total % tarfile.RECORDSIZE))
    return b"".join(parts)


def _tar_header(name: str, size: int) -> bytes:
    """A ustar member header, mtime 0 and no owner: byte-identical shards for equal input.

    Every block's members differ from the last block's only in the name, so the header is
    a cached one of the same name length and size with the name written in and the checksum
    (the sum of the header's bytes) moved by the name's bytes: ~50x cheaper than
    ``TarInfo.tobuf`` per member, and the same bytes (tests/featurize/test_shards.py)."""
    raw = name.encode("utf-8")
    if len(raw) >= 100:  # would need the ustar prefix field: the general writer
        return _tarinfo_header(name, size)
    template, base = _header_template(len(raw), size)
    return raw + template[len(raw):148] + b"%06o\0" % (base + sum(raw)) + template[155:]


@functools.lru_cache(maxsize=4096)
def _header_template(length: int, size: int) -> tuple[bytes, int]:
    """``tarfile``'s header for a name of ``length`` bytes (all ``x``) and ``size``, and its
    checksum less the name's bytes."""
    header = _tarinfo_header("x" * length, size)
    return header, sum(header[:148]) + 8 * ord(" ") + sum(header[156:]) - length * ord("x")


@functools.lru_cache(maxsize=4096)
def _tarinfo_header(name: str, size: int) -> bytes:
    """``tarfile``'s own ustar header for ``name`` (mtime 0, mode 644, no owner)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


@functools.lru_cache(maxsize=256)
def _npy_header_bytes(dtype: str, n: int) -> bytes:
    """The ``.npy`` header of a C-order 1-d array (what ``np.save`` writes before the data)."""
    stream = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def read_blocks(
    paths: Sequence[Path], *, part: int = 0, parts: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the blocks of ``paths`` in file order, as dicts of numpy arrays (see ``FIELDS``).

    ``part``/``parts`` keep only blocks whose global number ``j`` has ``j % parts == part``
    (the others are skipped before decoding): how several readers share fewer shards than
    there are readers. No node/worker splitting happens here; callers choose the paths.
    """
    if not 0 <= part < parts:
        raise ValueError(f"need 0 <= part < parts, got part={part}, parts={parts}")
    if not paths:
        return
    from webdataset.tariterators import group_by_keys, tar_file_expander

    # Not wds.WebDataset / wds.tarfile_samples: in webdataset 1.0.2 their opener never
    # closes the shard files (a ResourceWarning each). Same tar iteration and grouping
    # into samples, over files opened and closed here.
    for sample in group_by_keys(tar_file_expander(_opened(paths))):
        if parts > 1 and int(sample["__key__"][1:]) % parts != part:
            continue
        yield {k: _npy_load(sample[f"{k}.npy"]) for k in FIELDS}


def _opened(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """webdataset's ``{url, stream}`` sources, each file closed once its tar is consumed."""
    for path in paths:
        with open(path, "rb") as stream:
            yield {"url": str(path), "stream": stream}


def shard_summary(paths: Sequence[Path]) -> dict[str, int]:
    """Count samples, blocks, shards and bytes from tar and .npy headers only (no array data).

    With the file names, this is the manifest's ``shards.<split>`` entry (``featurize`` writes
    it), which ``fit`` reads to find and check the shards.
    """
    n_samples = n_blocks = 0
    for path in paths:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.name.endswith(".position.npy"):
                    stream = tar.extractfile(member)
                    assert stream is not None
                    n_samples += _npy_header(stream)[0][0]
                    n_blocks += 1
    return {"n_samples": n_samples, "n_blocks": n_blocks, "n_shards": len(paths),
            "bytes": sum(p.stat().st_size for p in paths)}


def rechunk(
    blocks: Iterable[dict[str, np.ndarray]], size: int, *, drop_last: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """Re-cut a stream of blocks into blocks of exactly ``size`` rows (the last may be short).

    Arrays are concatenated and sliced, never looped over per sample; each row is copied at
    most once. ``drop_last`` drops a short final block (fixed shapes for compiled models).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pending: list[dict[str, np.ndarray]] = []
    n_pending = 0
    for block in blocks:
        n_rows = len(next(iter(block.values())))
        if n_rows == 0:
            continue
        pending.append(block)
        n_pending += n_rows
        if n_pending < size:
            continue
        merged = _concat(pending)
        full = n_pending - n_pending % size
        for start in range(0, full, size):
            yield {k: v[start:start + size] for k, v in merged.items()}
        pending = [{k: v[full:] for k, v in merged.items()}] if full < n_pending else []
        n_pending -= full
    if n_pending and not drop_last:
        yield _concat(pending)


def _batches(reader: pa.RecordBatchReader) -> Iterator[dict[str, np.ndarray]]:
    """Record batches as numpy blocks with the block dtypes (no NULLs: featurize fills all)."""
    for batch in reader:
        if not batch.num_rows:
            continue
        out: dict[str, np.ndarray] = {}
        for name, dtype in FIELDS.items():
            column = batch.column(name)
            if column.null_count:
                raise ValueError(f"samples has NULLs in {name!r}; featurize must fill them")
            out[name] = to_numpy(column).astype(dtype, copy=False)
        yield out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _npy_header(stream: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy file at ``stream``; leaves it at the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def _npy_load(data: bytes) -> np.ndarray:
    """Decode .npy bytes without pickle into a writable array (one copy of the data).

    Headers are parsed once per distinct header (numpy parses them with ``ast``, which
    cost more than the whole tar read); blocks of one split share a handful of headers.
    """
    if data[:6] != b"\x93NUMPY":
        raise ValueError("shard entry is not a .npy array")
    size = 2 if data[6] == 1 else 4
    end = 8 + size + int.from_bytes(data[8:8 + size], "little")
    shape, dtype = _npy_parse(data[:end])
    count = math.prod(shape)
    return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape).copy()


@functools.lru_cache(maxsize=256)
def _npy_parse(header: bytes) -> tuple[tuple[int, ...], np.dtype]:
    shape, fortran, dtype = _npy_header(io.BytesIO(header))
    if dtype.hasobject or fortran:
        raise ValueError("shard entry is not a plain C-order numeric array")
    return shape, dtype
