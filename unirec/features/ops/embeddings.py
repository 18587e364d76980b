"""Text and image fields -> rows of shared frozen-embedding tables.

The ops only collect what to embed (``text_pool`` / ``image_pool``); ``embed_pools`` in
features/embedding.py embeds each distinct string or file once, for every field and both
sides together, and the ops' columns then point into ``text_embeddings`` /
``image_embeddings`` by index.
"""

from __future__ import annotations

from unirec.features.ops.base import Context, Op, Output
from unirec.features.ops.registry import OPS
from unirec.store.sql import literal


@OPS.register("text_embedding")
class TextEmbedding(Op):
    """A string -> its row in ``text_embeddings``.

    Reserved index: **0 = missing text** (a zero vector). Identical strings, in any field
    or side, share one row and are embedded once.
    """

    name = "text_embedding"
    accepts = ("VARCHAR",)

    def outputs(self) -> list[Output]:
        return [Output(self.spec.name, "int32")]

    def fit(self, ctx: Context) -> None:
        ctx.con.execute(f"INSERT INTO text_pool SELECT DISTINCT value FROM "
                        f"({ctx.value_sql(self.spec)}) WHERE value IS NOT NULL")

    def transform_sql(self, ctx: Context) -> str:
        return (f"SELECT s.key, coalesce(t.text_index, 0)::INTEGER AS {self.col()} FROM "
                f"({ctx.value_sql(self.spec)}) s LEFT JOIN text_embeddings t ON s.value = t.text")


@OPS.register("image_embedding")
class ImageEmbedding(Op):
    """An image path -> its row in ``image_embeddings``, plus ``.missing``.

    Relative paths resolve against the input's folder. Reserved index: **0 = no image**
    (no path, a missing file, or one that does not decode: a zero vector with
    ``.missing`` = 1; unreadable files are counted in the report).
    """

    name = "image_embedding"
    accepts = ("VARCHAR",)

    def outputs(self) -> list[Output]:
        return [Output(self.spec.name, "int32"), Output(f"{self.spec.name}.missing", "float32")]

    def resolved_sql(self, ctx: Context) -> str:
        """SELECT key, path: each image path made absolute against the input's folder."""
        return (f"SELECT key, CASE WHEN value IS NULL THEN NULL WHEN starts_with(value, '/') "
                f"THEN value ELSE {literal(ctx.base_dir + '/')} || value END AS path "
                f"FROM ({ctx.value_sql(self.spec)})")

    def fit(self, ctx: Context) -> None:
        ctx.con.execute(f"INSERT INTO image_pool SELECT DISTINCT path FROM "
                        f"({self.resolved_sql(ctx)}) WHERE path IS NOT NULL")

    def transform_sql(self, ctx: Context) -> str:
        return (f"SELECT s.key, CASE WHEN i.missing THEN 0 ELSE coalesce(i.image_index, 0) "
                f"END::INTEGER AS {self.col()}, (i.image_index IS NULL OR i.missing)::FLOAT "
                f"AS {self.col('.missing')} FROM ({self.resolved_sql(ctx)}) s "
                f"LEFT JOIN image_embeddings i ON s.path = i.path")
