"""Stage progress on stderr, and the plan that ``unirec featurize --plan`` prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import duckdb
from tqdm import tqdm

from unirec.config import Config
from unirec.features.ops import FeatureSpec
from unirec.featurize.compile import fit_ops

STAGES = ("read", "validate", "split", "samples", "features", "shards")


class Stages:
    """A tqdm bar over featurize's stages (stderr; silent when stderr is not a terminal)."""

    def __init__(self, quiet: bool = False) -> None:
        self.bar = tqdm(total=len(STAGES), desc="featurize: read", file=sys.stderr,
                        disable=True if quiet else None, leave=False,
                        bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]")

    def next(self, name: str) -> None:
        self.bar.update(1)
        self.bar.set_description(f"featurize: {name}")

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def describe_plan(con: duckdb.DuckDBPyConnection, specs: list[FeatureSpec], cfg: Config,
                  report: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Every feature with op, outputs and vocabulary size, plus the split and sample plan.

    Vocabulary sizes come from the same fit the real run does, in a throwaway database:
    nothing is embedded and no store is written.
    """
    ops = fit_ops(con, specs, base_dir)
    n_text = con.execute("SELECT count(DISTINCT text) FROM text_pool").fetchone()[0]
    n_image = con.execute("SELECT count(DISTINCT path) FROM image_pool").fetchone()[0]
    return {
        "input": report["input"],
        "sections": report["sections"],
        "features": [op.to_json() for op in ops],
        "embeddings": {"text": {"model": cfg.text.model, "distinct_strings": n_text},
                       "image": {"model": cfg.image.model, "distinct_files": n_image}},
        "split": report["split"],
        "samples": {**report["samples"], "block_size": cfg.samples.block_size,
                    "shard_blocks": cfg.samples.shard_blocks},
    }


def plan_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per output column, for the plan table."""
    rows = []
    for f in plan["features"]:
        for o in f["outputs"]:
            rows.append({"side": f["side"], "feature": f["name"], "op": f["op"],
                         "output": o["column"], "dtype": o["dtype"],
                         "shape": "x".join(map(str, o["shape"])) or "scalar",
                         "vocab": f.get("vocab_size") if o["column"] == f["name"] else None})
    return rows
