"""The serving bundle: what answering a query needs, as plain numpy files in ``model/``.

Why files and not the DuckDB store: ``unirec recommend`` must start and answer in well under
half a second, and a known user's answer needs only their vector, the item vectors, the items
they have seen and the ids. ``.npy`` files memory-map in microseconds and need nothing but
numpy, so the query path never imports torch, polars or DuckDB. The bundle is written by
``fit`` (``write_bundle``) from the store it trained on, and records that store's identity so
a re-featurized store is not silently served with a stale model.

Layout (``{side}`` is ``user`` or ``item``; row i = entity index i, row 0 = padding):

- ``{side}_ids.npy``: the id of every index (int64 or unicode, as the input had them).
- ``{side}_sorted_ids.npy`` / ``{side}_sorted_index.npy``: ids sorted, and their indices:
  id -> index by binary search, no dict to build at start-up.
- ``seen_indptr.npy`` / ``seen_indices.npy``: CSR of every item each user interacted with
  (all splits: what to leave out of "new to you" recommendations).
- ``popularity.npy``: interactions per item the served model trained on (train, plus
  validation after ``train.refit``): the ``--fallback popular`` ranking.
- ``item_titles.npy`` + ``item_title_offsets.npy``: a readable item field as UTF-8 bytes and
  offsets, decoded only for the K items shown.
- ``bundle.json``: which store this is from and which field the titles are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from unirec.model.folder import BUNDLE_META, store_identity
from unirec.store import Store
from unirec.store.csr import csr_from_pairs
from unirec.store.layout import SIDES
from unirec.store.sql import ident

BUNDLE_FORMAT = 1
# Text fields, most readable first, that make a good label for an item in a results table.
TITLE_FIELDS = ("title", "name", "label", "headline")


def _ids(con: Any, side: str) -> np.ndarray:
    s = SIDES[side]
    id_col, map_name, index = s.id, s.map, s.index
    ids = con.sql(f"SELECT {id_col} FROM {map_name} ORDER BY {index}").fetchnumpy()[id_col]
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return np.concatenate([[0], ids]).astype(np.int64)
    return np.concatenate([[""], ids.astype(str)])


def title_field(manifest: dict[str, Any]) -> str | None:
    """The item text field to show beside ids: a known title name, else the first text field."""
    fields = [f["field"] for f in manifest["features"]
              if f["side"] == "item" and f["group"] == "text"]
    for name in TITLE_FIELDS:
        if name in fields:
            return name
    return fields[0] if fields else None


def _titles(con: Any, field: str) -> tuple[np.ndarray, np.ndarray]:
    col = con.sql(f"SELECT coalesce(i.text.{ident(field)}, '') AS t FROM item_map m JOIN items i "
                  "USING (item_id) ORDER BY m.item_index").to_arrow_table().column("t")
    arr = pa.concat_arrays([pa.array([""]), *col.chunks]).cast(pa.large_string())
    _, offsets, data = arr.buffers()  # Arrow's own layout: no per-item Python loop
    offsets = np.frombuffer(offsets, np.int64)[arr.offset: arr.offset + len(arr) + 1]
    return np.frombuffer(data, np.uint8)[offsets[0]: offsets[-1]].copy(), offsets - offsets[0]


def write_bundle(store: Store, out: Path, popularity: np.ndarray) -> None:
    """Write the serving files for ``store`` into ``out`` (the model folder)."""
    manifest = store.manifest
    with store.connect() as con:
        n_users = con.execute("SELECT count(*) + 1 FROM user_map").fetchall()[0][0]
        seen = con.sql(
            "SELECT DISTINCT um.user_index AS u, im.item_index AS i FROM interactions x "
            "JOIN user_map um USING (user_id) JOIN item_map im USING (item_id) ORDER BY u, i"
        ).fetchnumpy()
        ids = {side: _ids(con, side) for side in SIDES}
        field = title_field(manifest)
        titles = _titles(con, field) if field else None
    users, items = seen["u"].astype(np.int64), seen["i"].astype(np.int64)
    indptr, items = csr_from_pairs(users, items, n_users)
    arrays: dict[str, np.ndarray] = {"seen_indptr": indptr, "seen_indices": items,
                                     "popularity": popularity.astype(np.float32)}
    for side, values in ids.items():
        order = np.argsort(values[1:], kind="stable") + 1
        arrays[f"{side}_ids"] = values
        arrays[f"{side}_sorted_ids"] = values[order]
        arrays[f"{side}_sorted_index"] = order.astype(np.int64)
    if titles is not None:
        arrays["item_titles"], arrays["item_title_offsets"] = titles
    for name, arr in arrays.items():
        np.save(out / f"{name}.npy", arr)
    (out / BUNDLE_META).write_text(json.dumps({
        "format": BUNDLE_FORMAT, "store": store_identity(manifest), "title_field": field,
    }, indent=1) + "\n")
