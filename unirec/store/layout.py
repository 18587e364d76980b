"""How the store names each side: its raw table, id column, index map and index column.

Every stage that turns a side (``"user"`` / ``"item"``) into SQL reads these names here.
"""

from __future__ import annotations

SIDES = {"user": ("users", "user_id", "user_map", "user_index"),
         "item": ("items", "item_id", "item_map", "item_index")}
