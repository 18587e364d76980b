"""Every name the store gives a side (user or item) and the input document's sections.

One table, read by every stage that turns a side into SQL or a message: the document section
(``user_data``), the raw table and folder-file stem (``users``), the id column, the id ->
index map and the index column (0 is padding/unknown). Plain constants: importing them costs
nothing beyond the package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Side:
    """One side of the data and its names."""

    name: str  # "user": what configs, manifests and the API call it
    section: str  # "user_data": its section of the input document
    table: str  # "users": its raw table, and the file stem of a folder input
    id: str  # "user_id": the id column
    map: str  # "user_map": the id -> index table
    index: str  # "user_index": the dense index column, 1..N (0 = padding/unknown)


SIDES: dict[str, Side] = {
    "user": Side("user", "user_data", "users", "user_id", "user_map", "user_index"),
    "item": Side("item", "item_data", "items", "item_id", "item_map", "item_index"),
}
SIDE_OF_SECTION: dict[str, Side] = {s.section: s for s in SIDES.values()}
SECTIONS = ("user_data", "item_data", "interactions")
"""The input document's sections, in the order they are read."""
SECTION_TABLES: dict[str, str] = {**{s.section: s.table for s in SIDES.values()},
                                  "interactions": "interactions"}
"""Section -> its raw table in the store (and its file stem in a folder input)."""
