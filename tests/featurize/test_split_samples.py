"""Splits and samples: known answers, leakage rules, a property test against a Python oracle.

Histories are stored by reference (``history_end`` into ``user_sequences``); ``_samples``
reads them back the way training does (``gather_history`` over ``sequence_arrays``) and checks
that the SQL view ``sample_history`` shows the same lists, and ``_old_histories`` keeps the
window-list SQL that materialised them before, as a second reference.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from fractions import Fraction

import duckdb
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unirec.config import SamplesConfig, SplitConfig
from unirec.errors import ConfigError
from unirec.featurize.samples import build_samples, item_popularity, sequence_arrays
from unirec.featurize.split import assign_splits
from unirec.model.inputs import gather_history

# (user_id, item_id, interaction_type, unix seconds or None, weight); position = list index
Row = tuple[int, int, "str | None", "float | None", "float | None"]


def _maps(con: duckdb.DuckDBPyConnection) -> None:
    for side in ("user", "item"):
        con.execute(f"CREATE TABLE {side}_map AS SELECT {side}_id, (row_number() OVER "
                    f"(ORDER BY position))::INTEGER AS {side}_index FROM {side}s")


def _load(rows: list[Row], extra_items: tuple[int, ...] = ()) -> duckdb.DuckDBPyConnection:
    """In-memory database with users, items, interactions and the index maps."""
    con = duckdb.connect()
    con.execute("CREATE TABLE raw (position BIGINT, user_id BIGINT, item_id BIGINT, "
                "interaction_type VARCHAR, ts DOUBLE, weight DOUBLE)")
    if rows:
        con.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?)",
                        [(p, *r) for p, r in enumerate(rows)])
    con.execute("CREATE TABLE interactions AS SELECT position, user_id, item_id, "
                "interaction_type, make_timestamp((ts * 1e6)::BIGINT) AS timestamp, weight, "
                "NULL::DOUBLE AS rating FROM raw ORDER BY position")
    con.execute("CREATE TABLE users AS SELECT user_id, min(position) AS position "
                "FROM raw GROUP BY user_id")
    con.execute("CREATE TABLE items AS SELECT item_id, min(position) AS position FROM raw "
                "GROUP BY item_id UNION ALL SELECT unnest(?::BIGINT[]), 1000000000 + "
                "unnest(range(len(?::BIGINT[]))) ", [list(extra_items), list(extra_items)])
    _maps(con)
    return con


def _splits(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return dict(con.execute("SELECT position, split FROM split_interactions").fetchall())


def _histories(con: duckdb.DuckDBPyConnection, width: int) -> dict[int, list[int]]:
    """position -> padded history, gathered by reference as training does; checks the view."""
    refs = con.execute("SELECT position, history_end, history_length FROM samples "
                       "ORDER BY position").fetchnumpy()
    items = torch.from_numpy(sequence_arrays(con)["items"])
    got = gather_history(items, torch.from_numpy(refs["history_end"]),
                         torch.from_numpy(refs["history_length"]), width).tolist()
    out = dict(zip(refs["position"].tolist(), got, strict=True))
    view = dict(con.execute("SELECT position, history FROM sample_history").fetchall())
    assert view == {p: [i for i in h[width - n:]] for p, h, n in zip(
        refs["position"].tolist(), got, refs["history_length"].tolist(), strict=True)}
    return out


def _old_histories(con: duckdb.DuckDBPyConnection, width: int) -> dict[int, list[int]]:
    """The materialising SQL of store format 1, kept as a reference: a window ``list()`` per
    row over the ``width`` rows before the first row at the sample's time."""
    rows = con.execute(
        f"SELECT position, list_concat(list_slice(repeat([0]::INTEGER[], {width}), 1, "
        f"{width} - len(hist)), hist) FROM (SELECT *, coalesce(list(item_index) OVER ("
        "PARTITION BY user_index ORDER BY time, position ROWS BETWEEN tie + "
        f"{width} PRECEDING AND tie + 1 PRECEDING), []::INTEGER[]) AS hist FROM (SELECT *, "
        "row_number() OVER (PARTITION BY user_index, time ORDER BY position) - 1 AS tie "
        "FROM split_interactions))").fetchall()
    return dict(rows)


def _samples(con: duckdb.DuckDBPyConnection, width: int = 50) -> dict[int, tuple]:
    """position -> (split, item_index, weight, history, history_length); ``width`` is the
    ``history_length`` setting; the gathered histories must equal the old SQL's."""
    got = con.execute("SELECT position, split, item_index, weight, history_length "
                      "FROM samples").fetchall()
    hist = _histories(con, width)
    old = _old_histories(con, width)
    assert all(hist[p] == old[p] for p in hist)
    return {r[0]: (*r[1:4], hist[r[0]], r[4]) for r in got}


def _per_user(splits: dict[int, str], rows: list[Row]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = defaultdict(lambda: {"train": 0, "val": 0, "test": 0})
    for pos, s in splits.items():
        out[rows[pos][0]][s] += 1
    return dict(out)


# ---------------------------------------------------------------- Python oracle (the spec)

def _sizes(n: int, tf: float, vf: float) -> tuple[int, int]:
    n_test = max(1, math.floor(Fraction(str(tf)) * n)) if tf > 0 else 0
    n_test = min(n_test, max(n - 1, 0))
    n_val = max(1, math.floor(Fraction(str(vf)) * n)) if vf > 0 else 0
    return n_test, min(n_val, max(n - 1 - n_test, 0))


def _oracle_split(rows: list[Row], cfg: SplitConfig) -> dict[int, str]:
    t = [r[3] if r[3] is not None else float(p) for p, r in enumerate(rows)]
    out = {}
    if cfg.strategy == "global-time":
        n_test, n_val = _sizes(len(rows), cfg.test_fraction, cfg.val_fraction)
        order = sorted(t)
        cut_t = order[len(rows) - n_test] if n_test else math.inf
        cut_v = order[len(rows) - n_test - n_val] if n_val else math.inf
        return {p: "test" if x >= cut_t else "val" if x >= cut_v else "train"
                for p, x in enumerate(t)}
    tf = cfg.test_fraction if cfg.strategy == "user-time" else 0.0
    users = defaultdict(list)
    for p, r in enumerate(rows):
        users[r[0]].append(p)
    for ps in users.values():
        ps.sort(key=lambda p: (t[p], p))
        n = len(ps)
        n_test, n_val = _sizes(n, tf, cfg.val_fraction)
        if n < cfg.min_user_interactions:
            n_test = n_val = 0
        for k, p in enumerate(ps):
            out[p] = "test" if k >= n - n_test else "val" if k >= n - n_test - n_val else "train"
    return out


def _oracle_samples(rows: list[Row], cfg: SamplesConfig, splits: dict[int, str],
                    item_index: dict[int, int]) -> dict[int, tuple]:
    t = [r[3] if r[3] is not None else float(p) for p, r in enumerate(rows)]
    out = {}
    for p, (u, i, typ, _, w) in enumerate(rows):
        if cfg.keep_types is not None and typ not in cfg.keep_types:
            continue
        weight = cfg.type_weights.get(typ, 1.0) * (w if cfg.use_weight_field and w is not None
                                                    else 1.0)
        if np.float32(weight) == 0:
            continue
        before = sorted((t[q], q) for q, r in enumerate(rows) if r[0] == u and t[q] < t[p])
        hist = [item_index[rows[q][1]] for _, q in before][-cfg.history_length:]
        padded = [0] * (cfg.history_length - len(hist)) + hist
        out[p] = (splits[p], item_index[i], float(np.float32(weight)), padded, len(hist))
    return out


# ---------------------------------------------------------------- known answers

def test_user_time_slices_per_user():
    rng = np.random.default_rng(1)
    ten = [(1, 100 + k, None, float(s), None) for k, s in enumerate(rng.permutation(10))]
    rows = ten + [(2, 1, None, 5.0, None), (2, 2, None, 6.0, None)] + [
        (3, 1, None, float(s), None) for s in (3, 1, 2)]
    con = _load(rows)
    summary = assign_splits(con, SplitConfig(test_fraction=0.2, val_fraction=0.1,
                                             min_user_interactions=3))
    splits = _splits(con)
    assert _per_user(splits, rows) == {1: {"train": 7, "val": 1, "test": 2},
                                       2: {"train": 2, "val": 0, "test": 0},
                                       3: {"train": 1, "val": 1, "test": 1}}
    by_time = {rows[p][3]: s for p, s in splits.items() if rows[p][0] == 1}
    assert [by_time[float(s)] for s in range(10)] == ["train"] * 7 + ["val"] + ["test"] * 2
    assert splits[12] == "test" and splits[13] == "train" and splits[14] == "val"
    assert summary["counts"] == {"train": 10, "val": 2, "test": 3}
    assert summary["users_with_test"] == 2 and summary["synthetic_time"] is False


def test_tiny_users_keep_one_train_interaction():
    rows = [(1, 1, None, 1.0, None), (2, 1, None, 1.0, None), (2, 2, None, 2.0, None)]
    con = _load(rows)
    assign_splits(con, SplitConfig(test_fraction=0.5, val_fraction=0.5, min_user_interactions=1))
    assert _splits(con) == {0: "train", 1: "train", 2: "test"}


def test_fractions_floor_as_written():
    rows = [(1, k, None, float(k), None) for k in range(9)] + [
        (2, k, None, float(k), None) for k in range(100)]
    con = _load(rows)
    assign_splits(con, SplitConfig(test_fraction=0.29, val_fraction=0.07))
    # 0.29 * 9 = 2.61 floors to 2; 0.29 * 100 is 28.999999999999996 in doubles, yet 29
    assert _per_user(_splits(con), rows) == {1: {"train": 6, "val": 1, "test": 2},
                                             2: {"train": 64, "val": 7, "test": 29}}


def test_none_has_no_test_slice():
    rows = [(1, k, None, float(k), None) for k in range(10)]
    con = _load(rows)
    summary = assign_splits(con, SplitConfig(strategy="none", test_fraction=0.5,
                                             val_fraction=0.2))
    assert summary["counts"] == {"train": 8, "val": 2, "test": 0}
    assert [_splits(con)[p] for p in range(10)] == ["train"] * 8 + ["val"] * 2


def test_global_time_cut_and_ties():
    rows = [(1 + k % 3, k, None, float(k), None) for k in range(10)]
    con = _load(rows)
    summary = assign_splits(con, SplitConfig(strategy="global-time", test_fraction=0.2,
                                             val_fraction=0.3))
    assert [_splits(con)[p] for p in range(10)] == ["train"] * 5 + ["val"] * 3 + ["test"] * 2
    assert summary["cut_times"] == {"val": "1970-01-01T00:00:05.000000",
                                    "test": "1970-01-01T00:00:08.000000"}
    tied = rows + [(2, 99, None, 7.5, None), (3, 98, None, 7.5, None)]
    con = _load(tied)
    assign_splits(con, SplitConfig(strategy="global-time", test_fraction=0.25,
                                   val_fraction=0.0))
    assert {p for p, s in _splits(con).items() if s == "test"} == {8, 9, 10, 11}
    with pytest.raises(ConfigError, match="below 1"):
        assign_splits(con, SplitConfig(strategy="global-time", test_fraction=0.6,
                                       val_fraction=0.4))


def test_no_timestamps_use_input_order():
    rows = [(1, 10 + k, None, None, None) for k in range(5)] + [(2, 1, None, None, None)]
    con = _load(rows)
    summary = assign_splits(con, SplitConfig(test_fraction=0.2, val_fraction=0.2))
    assert summary["synthetic_time"] is True
    assert [_splits(con)[p] for p in range(5)] == ["train"] * 3 + ["val", "test"]
    build_samples(con, SamplesConfig(history_length=2))
    got = _samples(con, 2)
    assert got[1][3] == [0, 1] and got[4][3] == [3, 4] and got[5][3] == [0, 0]


def test_history_padding_order_and_ties():
    rows = [(1, 10, None, 1.0, None), (1, 11, "view", 2.0, None), (1, 12, None, 2.0, None),
            (1, 13, None, 3.0, None), (1, 14, None, 5.0, None), (2, 10, None, 2.0, None)]
    con = _load(rows)
    assign_splits(con, SplitConfig(strategy="none", val_fraction=0.0))
    build_samples(con, SamplesConfig(history_length=3, keep_types=["buy"]))
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    summary = build_samples(con, SamplesConfig(history_length=3))
    got = {p: (h, n) for p, (_, _, _, h, n) in _samples(con, 3).items()}
    assert got == {0: ([0, 0, 0], 0), 1: ([0, 0, 1], 1), 2: ([0, 0, 1], 1),
                   3: ([1, 2, 3], 3), 4: ([2, 3, 4], 3), 5: ([0, 0, 0], 0)}
    assert summary["mean_train_history"] == pytest.approx(8 / 6)
    # a filtered-out view still counts as history
    con.execute("UPDATE split_interactions SET interaction_type = 'x' WHERE position <> 1")
    summary = build_samples(con, SamplesConfig(history_length=3, keep_types=["x"]))
    assert summary["dropped"]["filtered_type"] == 1 and _samples(con, 3)[3][3] == [1, 2, 3]


def test_weights_types_and_drops():
    rows = [(1, 1, "view", 1.0, 2.0), (1, 2, "buy", 2.0, None), (1, 3, "click", 3.0, 1.0),
            (1, 4, None, 4.0, 0.0), (1, 1, "buy", 5.0, 0.5), (1, 2, "view", 6.0, None)]
    con = _load(rows)
    assign_splits(con, SplitConfig(strategy="none", val_fraction=0.0))
    cfg = SamplesConfig(type_weights={"buy": 3.0, "view": 0.0}, keep_types=["buy", "view"])
    summary = build_samples(con, cfg)
    assert {p: s[2] for p, s in _samples(con, 50).items()} == {1: 3.0, 4: 1.5}
    assert summary["dropped"] == {"filtered_type": 2, "zero_weight": 2}
    assert summary["counts"] == {"train": 2, "val": 0, "test": 0}
    summary = build_samples(con, SamplesConfig(use_weight_field=False))
    assert {p: s[2] for p, s in _samples(con).items()} == {p: 1.0 for p in range(6)}
    assert summary["dropped"] == {"filtered_type": 0, "zero_weight": 0}
    with pytest.raises(ConfigError, match="finite and >= 0"):
        build_samples(con, SamplesConfig(type_weights={"buy": -1.0}))


def test_item_popularity_counts_train_only():
    rows = [(1, 7, None, float(k), 2.0) for k in range(3)] + [
        (1, 8, None, 3.0, None), (2, 8, None, 0.0, 0.5), (2, 9, None, 1.0, None)]
    con = _load(rows, extra_items=(5,))
    assign_splits(con, SplitConfig(test_fraction=0.25, val_fraction=0.0,
                                   min_user_interactions=3))
    assert _splits(con)[3] == "test"
    build_samples(con, SamplesConfig())
    pop = item_popularity(con)
    assert pop.dtype == np.float32 and pop.tolist() == [0.0, 6.0, 0.5, 1.0, 0.0]
    table = con.execute("SELECT item_index, train_count FROM item_popularity").fetchall()
    assert table == [(1, 3), (2, 1), (3, 1), (4, 0)]


# ---------------------------------------------------------------- properties

_rows = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6),
                           st.sampled_from([None, "view", "buy"]),
                           st.sampled_from([0.0, 1.0, 1.5, 2.0, 4.0]),
                           st.sampled_from([None, 0.0, 1.0, 2.5])), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(rows=_rows, timed=st.booleans(), strategy=st.sampled_from(["user-time", "global-time",
                                                                   "none"]),
       tf=st.sampled_from([0.0, 0.1, 0.2, 0.5]), vf=st.sampled_from([0.0, 0.1, 0.3]),
       min_n=st.integers(1, 4), h=st.integers(1, 4), use_w=st.booleans(),
       keep=st.sampled_from([None, ["buy", "view"], ["view"]]))
def test_matches_oracle_and_never_leaks(rows, timed, strategy, tf, vf, min_n, h, use_w, keep):
    rows = [r if timed else (*r[:3], None, r[4]) for r in rows]
    con = _load(rows)
    split_cfg = SplitConfig(strategy=strategy, test_fraction=tf, val_fraction=vf,
                            min_user_interactions=min_n)
    sample_cfg = SamplesConfig(history_length=h, keep_types=keep, use_weight_field=use_w,
                               type_weights={"buy": 2.0})
    assign_splits(con, split_cfg)
    splits = _splits(con)
    assert splits == _oracle_split(rows, split_cfg)
    build_samples(con, sample_cfg)
    item_index = dict(con.execute("SELECT item_id, item_index FROM item_map").fetchall())
    got = _samples(con, h)
    assert got == _oracle_samples(rows, sample_cfg, splits, item_index)
    t = [r[3] if timed else float(p) for p, r in enumerate(rows)]
    for p, (_, _, _, hist, n) in got.items():
        earlier = {rows[q][1] for q in range(len(rows)) if rows[q][0] == rows[p][0]
                   and t[q] < t[p]}
        assert len(hist) == h and hist[: h - n] == [0] * (h - n)
        assert {k for k in hist if k} <= {item_index[i] for i in earlier}
    train = {(rows[p][0], rows[p][1], p) for p, s in got.items() if s[0] == "train"}
    assert not train & {(rows[p][0], rows[p][1], p) for p, s in got.items() if s[0] != "train"}
    if strategy != "global-time":
        rank = {"train": 0, "val": 1, "test": 2}
        for u in {r[0] for r in rows}:
            ps = sorted((p for p in splits if rows[p][0] == u), key=lambda p: (t[p], p))
            assert [rank[splits[p]] for p in ps] == sorted(rank[splits[p]] for p in ps)
    if strategy == "none":
        assert "test" not in splits.values()
    pop = item_popularity(con)
    want = np.zeros(len(item_index) + 1, np.float32)
    for s in got.values():
        want[s[1]] += s[2] if s[0] == "train" else 0.0
    np.testing.assert_allclose(pop, want, rtol=1e-6)


def test_scale_smoke_200k():
    n = 200_000
    con = duckdb.connect()
    con.execute(f"CREATE TABLE interactions AS SELECT range AS position, "
                f"(hash(range) % 8000)::BIGINT AS user_id, (hash(range + {n}) % 3000)::BIGINT "
                "AS item_id, NULL::VARCHAR AS interaction_type, make_timestamp((hash(range * 3) "
                "% 100000)::BIGINT * 1000000) AS timestamp, NULL::DOUBLE AS weight, "
                f"NULL::DOUBLE AS rating FROM range({n})")
    con.execute("CREATE TABLE users AS SELECT user_id, min(position) AS position "
                "FROM interactions GROUP BY ALL")
    con.execute("CREATE TABLE items AS SELECT item_id, min(position) AS position "
                "FROM interactions GROUP BY ALL")
    _maps(con)
    start = time.perf_counter()
    split = assign_splits(con, SplitConfig())
    summary = build_samples(con, SamplesConfig(history_length=20))
    elapsed = time.perf_counter() - start
    assert sum(split["counts"].values()) == n == sum(summary["counts"].values())
    assert elapsed < 15, elapsed
    # independent history: a self-join instead of window frames, against the SQL view
    mismatched = con.execute(
        "WITH want AS (SELECT s.position, list(b.item_index ORDER BY b.time, b.position) AS l "
        "FROM samples s JOIN split_interactions b ON b.user_index = s.user_index "
        "AND b.time < s.time GROUP BY s.position) SELECT count(*) FROM sample_history s "
        "LEFT JOIN want w USING (position) WHERE s.history_length <> least(len(coalesce(w.l, "
        "[])), 20) OR s.history <> coalesce(list_slice(w.l, -20, -1), [])"
    ).fetchone()[0]
    assert mismatched == 0
