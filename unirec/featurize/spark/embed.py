"""Text and image embeddings computed on the executors, into the shared vector cache.

The pools (distinct strings, distinct image paths) are split over executor tasks; each task
runs the very embedder the DuckDB engine runs, through the same content-addressed
``EmbeddingCache``: the building store's (on storage every executor reaches), or
``spark.cache_dir``, a shared cache kept across stores whose new parts are then linked into
the store's own cache, so a model is
loaded once per executor Python process (the embedders keep loaded models per process and
Spark reuses its Python workers) and every vector is computed once, with torch's thread
count pinned to the driver's (``embed_threads``), so the vectors are the DuckDB engine's bit
for bit. The shared
``embed_pools`` then reads every vector from the cache and builds the embedding tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from unirec.config import Config
from unirec.errors import require_extra

ROWS_PER_TASK = 1024  # fewer rows than this would not pay for a model load per task


def _embed_part(kind: str, cfg: Config, cache_root: str, threads: int,
                batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import torch

    from unirec.features.embed import EmbeddingCache, ImageEmbedder, TextEmbedder

    torch.set_num_threads(threads)
    values = [v for b in batches for v in b.column(0).to_pylist()]
    if not values:
        yield pa.RecordBatch.from_pydict({"n": [0], "namespace": [""]})
        return
    if kind == "text":
        emb: Any = TextEmbedder(cfg.text.model, cfg.text.device, cfg.text.batch_size,
                                show_progress_bar=False)
    else:
        emb = ImageEmbedder(cfg.image.model, cfg.image.checkpoint, cfg.image.device,
                            cfg.image.batch_size)
    cache = EmbeddingCache.for_model(cache_root, kind, emb.model_id)
    emb.embed(values, cache)
    yield pa.RecordBatch.from_pydict({"n": [int(emb.n_encoded)], "namespace": [cache.namespace]})


def embed_threads(cfg: Config) -> int:
    """torch's intra-op threads on the executors: ``spark.embed_threads``, else the count
    torch uses in this driver process, the one the DuckDB engine embeds with. CPU
    convolutions split their sums by thread, so image vectors computed with another count
    differ in the last bits (~3e-6); Spark starts its Python workers with OMP_NUM_THREADS
    = spark.task.cpus (1), which would be such another count."""
    if cfg.spark.embed_threads:
        return cfg.spark.embed_threads
    import torch

    return torch.get_num_threads()


def embed_on_executors(spark: Any, con: duckdb.DuckDBPyConnection, cfg: Config,
                       cache_root: Path) -> dict[str, int]:
    """Fill the cache for ``text_pool`` and ``image_pool``; vectors computed per kind."""
    done: dict[str, int] = {}
    for kind, sql in (("text", "SELECT DISTINCT text AS v FROM text_pool ORDER BY v"),
                      ("image", "SELECT DISTINCT path AS v FROM image_pool ORDER BY v")):
        pool = con.sql(sql).to_arrow_table()
        if not pool.num_rows:
            continue
        require_extra("train", f"featurize of {kind} fields (a "
                      f"{'sentence-transformers' if kind == 'text' else 'timm'} model embeds "
                      "them)")
        tasks = max(1, min(spark.sparkContext.defaultParallelism,
                           math.ceil(pool.num_rows / ROWS_PER_TASK)))
        df = spark.createDataFrame(pool).repartition(tasks)
        shared = Path(cfg.spark.cache_dir).absolute() if cfg.spark.cache_dir else None
        if shared is not None:  # the previous store's vectors count as cached too
            _link_parts(cache_root, shared, None)
        root = str(shared or cache_root.absolute())
        threads = embed_threads(cfg)
        counts = df.mapInArrow(lambda b, k=kind, r=root, t=threads: _embed_part(k, cfg, r, t, b),
                               "n BIGINT, namespace STRING").collect()
        done[kind] = sum(r[0] for r in counts)
        if shared is not None:  # the store keeps its own vectors (serving reads them there)
            _link_parts(shared, cache_root, {r[1] for r in counts if r[1]})
    return done


def _link_parts(source: Path, target: Path, namespaces: set[str] | None) -> None:
    """Hard-link (else copy) the cache parts of ``namespaces`` (None: all) from ``source``
    into ``target``; parts are immutable and content-addressed, so sharing them is safe."""
    from unirec.store.atomic import link_or_copy

    for part in sorted(source.glob("*/part-*.parquet")) if source.is_dir() else []:
        dest = target / part.relative_to(source)
        if (namespaces is None or part.parent.name in namespaces) and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(part, dest)
