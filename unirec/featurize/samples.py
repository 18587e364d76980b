"""Training samples with their history, and item popularity, as DuckDB set operations.

Reads TEMP ``split_interactions`` (see ``split.assign_splits``) and writes the store tables
``samples`` and ``item_popularity``.

History. A sample's history is the user's items from *all* of that user's interactions
strictly before the sample's time, most recent last: earlier train, validation and test
interactions alike (a test sample sees what came before it, as at serving time), and also
interactions of types dropped by ``keep_types`` or weighted 0, because a view is evidence
of interest even when views are not training targets. Interactions at the same time are
never in each other's history.

It is computed exactly, with no slack: per row, ``tie`` counts the user's earlier rows
(in (time, position) order) that share its time, and the window frame
``ROWS BETWEEN tie + H PRECEDING AND tie + 1 PRECEDING`` is precisely the ``H`` rows before
the first row at that time. The frame is bounded (``H`` items per row whatever the user's
size or the number of ties), so memory is O(n * H), not O(n^2) for heavy users.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np

from unirec.config import SamplesConfig
from unirec.errors import ConfigError
from unirec.featurize.split import SPLITS


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _weight_sql(cfg: SamplesConfig) -> str:
    """Sample weight: type weight (1.0 when not listed) times the weight field when used."""
    for name, value in cfg.type_weights.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"samples.type_weights[{name!r}] = {value}: weights must be finite and >= 0 "
                "(0 drops that type's samples; keep_types does the same, counted)"
            )
    if cfg.type_weights:
        whens = " ".join(f"WHEN {_lit(k)} THEN {float(v)!r}::DOUBLE"
                         for k, v in cfg.type_weights.items())
        type_w = f"CASE interaction_type {whens} ELSE 1.0 END"
    else:
        type_w = "1.0"
    field_w = "coalesce(weight, 1.0)" if cfg.use_weight_field else "1.0"
    return f"(({type_w}) * {field_w})::FLOAT"


def _keep_sql(cfg: SamplesConfig) -> str:
    """True for rows whose type may become a sample (an untyped row is not in keep_types)."""
    if cfg.keep_types is None:
        return "TRUE"
    if not cfg.keep_types:
        return "FALSE"
    listed = ", ".join(_lit(t) for t in cfg.keep_types)
    return f"coalesce(interaction_type IN ({listed}), FALSE)"


def build_samples(con: duckdb.DuckDBPyConnection, cfg: SamplesConfig) -> dict[str, Any]:
    """Create ``samples`` and ``item_popularity`` from ``split_interactions``.

    ``samples(split, user_index, item_index, time, weight FLOAT, history INTEGER[],
    history_length, position)``: one row per kept interaction, ``history`` exactly
    ``history_length`` long, left-padded with 0, most recent item last; the column
    ``history_length`` counts its real items. Rows of types outside ``keep_types`` and rows
    weighing 0 are dropped and counted. Rows are in no particular order (sorting 10M rows
    of histories costs ~30% more; ORDER BY position for input order). Returns a JSON-able
    summary for the report.
    """
    h = int(cfg.history_length)
    weight, keep = _weight_sql(cfg), _keep_sql(cfg)
    dropped = con.execute(
        f"SELECT count(*) FILTER (WHERE NOT ({keep})), "
        f"count(*) FILTER (WHERE ({keep}) AND {weight} = 0) FROM split_interactions"
    ).fetchone()
    con.execute(
        "CREATE OR REPLACE TABLE samples AS "
        f"SELECT split, user_index, item_index, time, w AS weight, "
        f"list_concat(list_slice(repeat([0]::INTEGER[], {h}), 1, {h} - len(hist)), hist) "
        "AS history, "
        "len(hist)::INTEGER AS history_length, position "
        f"FROM (SELECT *, {weight} AS w, {keep} AS kept, "
        "coalesce(list(item_index) OVER (PARTITION BY user_index ORDER BY time, position "
        f"ROWS BETWEEN tie + {h} PRECEDING AND tie + 1 PRECEDING), []::INTEGER[]) AS hist "
        "FROM (SELECT *, row_number() OVER (PARTITION BY user_index, time ORDER BY position)"
        " - 1 AS tie FROM split_interactions)) "
        "WHERE kept AND w > 0"
    )
    con.execute(
        "CREATE OR REPLACE TABLE item_popularity AS "
        "SELECT m.item_index, coalesce(p.n, 0)::BIGINT AS train_count, "
        "coalesce(p.w, 0)::DOUBLE AS train_weight FROM item_map m LEFT JOIN "
        "(SELECT item_index, count(*) AS n, sum(weight::DOUBLE) AS w FROM samples "
        "WHERE split = 'train' GROUP BY item_index) p ON m.item_index = p.item_index "
        "ORDER BY m.item_index"
    )
    got = {s: (int(n), float(m or 0.0)) for s, n, m in con.execute(
        "SELECT split, count(*), avg(history_length) FROM samples GROUP BY split").fetchall()}
    return {
        "counts": {s: got.get(s, (0, 0.0))[0] for s in SPLITS},
        "dropped": {"filtered_type": int(dropped[0]), "zero_weight": int(dropped[1])},
        "history_length": h,
        "mean_train_history": got.get("train", (0, 0.0))[1],
    }


def item_popularity(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Summed train-sample weight per item index, float32, index 0 (padding) = 0.

    The logQ correction of the sampled softmax subtracts log(popularity): counting only
    train samples keeps validation and test items from leaking into training.
    """
    n_items = con.execute("SELECT coalesce(max(item_index), 0) FROM item_map").fetchone()[0]
    cols = con.execute("SELECT item_index, train_weight FROM item_popularity").fetchnumpy()
    pop = np.zeros(int(n_items) + 1, dtype=np.float32)
    pop[np.asarray(cols["item_index"], dtype=np.int64)] = np.asarray(cols["train_weight"])
    return pop
