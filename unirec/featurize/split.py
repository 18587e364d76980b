"""Train / validation / test assignment of interactions, as DuckDB set operations.

Reads ``interactions`` plus the caller's ``user_map(user_id, user_index)`` and
``item_map(item_id, item_index)`` and writes the TEMP table ``split_interactions``
(position, user_index, item_index, time, interaction_type, weight, split), which
``samples.build_samples`` turns into samples. Leakage rules (DESIGN.md): within a user, the
split order follows time, so train never comes after validation or test; equal times
fall on one side of a global cut.

Order within a user is (timestamp, position). Without timestamps the input order is the
time: ``time`` becomes the synthetic ``TIMESTAMP 'epoch' + position seconds`` and the
summary says ``synthetic_time: true``.
"""

from __future__ import annotations

from typing import Any

import duckdb

from unirec.config import SplitConfig
from unirec.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")

# floor(fraction * n) in doubles: 0.7 * 10 is 7.000000000000001 but 0.29 * 100 is
# 28.999999999999996; the nudge makes floor() agree with the decimal the user wrote.
_EPS = 1e-9


def slice_sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """(n_test, n_val) for ``n`` interactions: the rule, in Python, for tests and reports.

    Each non-zero fraction holds out at least one interaction, test before validation,
    and at least one interaction always stays in train.
    """
    n_test = max(1, int(test_fraction * n + _EPS)) if test_fraction > 0 else 0
    n_test = min(n_test, max(n - 1, 0))
    n_val = max(1, int(val_fraction * n + _EPS)) if val_fraction > 0 else 0
    n_val = min(n_val, max(n - 1 - n_test, 0))
    return n_test, n_val


def _sizes_sql(n: str, tf: float, vf: float) -> tuple[str, str]:
    """SQL twins of ``slice_sizes`` over the count expression ``n``."""
    raw_test = f"greatest(1, floor({tf!r} * {n} + {_EPS!r}))" if tf > 0 else "0"
    raw_val = f"greatest(1, floor({vf!r} * {n} + {_EPS!r}))" if vf > 0 else "0"
    n_test = f"least({raw_test}, greatest({n} - 1, 0))"
    n_val = f"least({raw_val}, greatest({n} - 1 - ({n_test}), 0))"
    return n_test, n_val


def _time_expr(con: duckdb.DuckDBPyConnection) -> tuple[str, bool]:
    """The ordering time, and whether it is synthetic (no timestamps in the input)."""
    total, timed = con.execute("SELECT count(*), count(timestamp) FROM interactions").fetchone()
    if timed == 0:
        return "TIMESTAMP 'epoch' + to_seconds(i.position)", True
    if timed != total:
        raise DataError(
            f"{total - timed} interactions have no timestamp while others have one; a time "
            "split needs every time (use --on-bad-timestamp=drop to skip them)",
            section="interactions", field="timestamp",
        )
    return "i.timestamp", False


def assign_splits(con: duckdb.DuckDBPyConnection, cfg: SplitConfig) -> dict[str, Any]:
    """Create TEMP ``split_interactions`` with a ``split`` in train/val/test per interaction.

    user-time: each user with at least ``min_user_interactions`` gives its last
    ``test_fraction`` to test and the ``val_fraction`` before them to validation
    (``slice_sizes``); smaller users stay wholly in train. global-time: one pair of time
    cuts for everyone, so no user trains on the future. none: user-time without a test
    slice. Returns a JSON-able summary for the featurize report.
    """
    time_sql, synthetic = _time_expr(con)
    tf = cfg.test_fraction if cfg.strategy != "none" else 0.0
    vf = cfg.val_fraction
    source = (
        "SELECT i.position::BIGINT AS position, u.user_index::INTEGER AS user_index, "
        f"m.item_index::INTEGER AS item_index, ({time_sql})::TIMESTAMP AS time, "
        "i.interaction_type::VARCHAR AS interaction_type, i.weight::DOUBLE AS weight "
        "FROM interactions i "
        "JOIN user_map u ON i.user_id = u.user_id JOIN item_map m ON i.item_id = m.item_id"
    )
    cuts: dict[str, str | None] = {}
    if cfg.strategy == "global-time":
        split_sql, cuts = _global_cuts(con, time_sql, tf, vf)
        select = f"SELECT *, {split_sql} AS split FROM ({source})"
    else:
        n_test, n_val = _sizes_sql("n", tf, vf)
        small = f"n < {int(cfg.min_user_interactions)}"
        select = (
            "SELECT position, user_index, item_index, time, interaction_type, weight, "
            f"CASE WHEN {small} THEN 'train' WHEN rk > n - ({n_test}) THEN 'test' "
            f"WHEN rk > n - ({n_test}) - ({n_val}) THEN 'val' ELSE 'train' END AS split "
            f"FROM (SELECT *, row_number() OVER (PARTITION BY user_index ORDER BY time, "
            f"position) AS rk, count(*) OVER (PARTITION BY user_index) AS n FROM ({source}))"
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE split_interactions AS {select}")
    return _summary(con, cfg.strategy, synthetic, cuts)


def _global_cuts(
    con: duckdb.DuckDBPyConnection, time_sql: str, tf: float, vf: float
) -> tuple[str, dict[str, str | None]]:
    """The CASE expression for a global time cut, and the cut times for the report.

    The test cut is the time of the first of the last ``n_test`` interactions in global
    time order (``slice_sizes`` over all n), and test is every interaction at or after it;
    DuckDB's ``quantile_disc`` would round the index down and hold out one row too many.
    Ties at a cut all go to the later split, so equal times never straddle it.
    """
    if tf + vf >= 1:
        raise ConfigError(
            f"split.test_fraction + split.val_fraction = {tf + vf:g}: a global-time split "
            "needs them below 1 to leave a training window"
        )
    n = con.execute("SELECT count(*) FROM interactions").fetchone()[0]
    n_test, n_val = slice_sizes(n, tf, vf)

    def time_at(offset: int) -> tuple[int, str]:
        """Epoch microseconds (exact, for the SQL) and ISO text (for the report)."""
        us, iso = con.execute(
            f"SELECT epoch_us(t), strftime(t, '%Y-%m-%dT%H:%M:%S.%f') FROM (SELECT "
            f"({time_sql})::TIMESTAMP AS t FROM interactions i ORDER BY 1 "
            f"LIMIT 1 OFFSET {int(offset)})"
        ).fetchone()
        return int(us), iso

    cuts: dict[str, str | None] = {"val": None, "test": None}
    cases = []
    for name, size, offset in (("test", n_test, n - n_test), ("val", n_val, n - n_test - n_val)):
        if size:
            us, cuts[name] = time_at(offset)
            cases.append(f"WHEN time >= make_timestamp({us}::BIGINT) THEN '{name}'")
    expr = f"CASE {' '.join(cases)} ELSE 'train' END" if cases else "'train'"
    return expr, cuts


def _summary(
    con: duckdb.DuckDBPyConnection, strategy: str, synthetic: bool, cuts: dict[str, str | None]
) -> dict[str, Any]:
    """Counts per split and users holding validation / test interactions."""
    got = dict(con.execute("SELECT split, count(*) FROM split_interactions GROUP BY split")
               .fetchall())
    users = con.execute(
        "SELECT count(DISTINCT user_index), "
        "count(DISTINCT user_index) FILTER (WHERE split = 'val'), "
        "count(DISTINCT user_index) FILTER (WHERE split = 'test') FROM split_interactions"
    ).fetchone()
    summary: dict[str, Any] = {
        "strategy": strategy,
        "synthetic_time": synthetic,
        "counts": {s: int(got.get(s, 0)) for s in SPLITS},
        "users": int(users[0]),
        "users_with_val": int(users[1]),
        "users_with_test": int(users[2]),
    }
    if strategy == "global-time":
        summary["cut_times"] = cuts
    return summary
