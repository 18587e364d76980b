"""Arrow arrays to and from numpy without pandas.

Why: pyarrow's own conversions (``Array.to_numpy``, ``pa.array``, compute kernels given a
Python scalar) ask whether pandas is installed by importing it, ~0.2 s per process, and
featurize never uses pandas (a test holds it to that). The arrays unirec moves between
DuckDB and numpy are fixed-width columns without NULLs (indices, weights, times, flags,
vectors), whose values buffer *is* the numpy array: these functions read and wrap that
buffer. Anything else (NULLs, nested types) goes through pyarrow's own conversion, correct as
ever; strings go through polars.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def _numpy_dtype(t: pa.DataType) -> np.dtype | None:
    """The numpy dtype whose items are ``t``'s values buffer, or None."""
    if pa.types.is_integer(t):
        return np.dtype(str(t))  # int8 ... uint64: the same names
    if pa.types.is_floating(t):
        return np.dtype(f"f{t.bit_width // 8}")
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        kind = "M" if pa.types.is_timestamp(t) else "m"
        return np.dtype(f"{kind}8[{t.unit}]")
    return None


def to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``array``'s values as numpy (a read-only view of Arrow's buffer where one exists)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    t, n, offset = array.type, len(array), array.offset
    if not array.null_count:
        if pa.types.is_boolean(t):
            bits = np.frombuffer(array.buffers()[1], np.uint8)
            return np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].view(bool)
        dtype = _numpy_dtype(t)
        if dtype is not None:
            return np.frombuffer(array.buffers()[1], dtype, count=n,
                                 offset=offset * dtype.itemsize)
    return array.to_numpy(zero_copy_only=False)


def from_numpy(values: np.ndarray) -> pa.Array:
    """A 1-d numeric, datetime64 or bool numpy array as an Arrow array without NULLs."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1:
        raise ValueError(f"from_numpy takes 1-d arrays, got shape {values.shape}")
    if values.dtype == bool:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def strings(values: list[str]) -> pa.Array:
    """Python strings as an Arrow (large) string array, through polars (no pandas)."""
    import polars as pl

    return pl.Series(values, dtype=pl.String).to_arrow()


__all__ = ["from_numpy", "strings", "to_numpy"]
