"""Every registered op gets the same checks the moment it registers."""

from __future__ import annotations

import json

import duckdb
import pytest

from unirec.features.ops import OPS, Context, FeatureSpec, Op
from unirec.featurize.compile import fit_ops

# Values for users 1..4 per accepted SQL type: user 3 is missing; user 4 is outside the
# training window and carries a value nobody else has.
VALUES = {
    "VARCHAR": ["'a'", "'b'", "NULL", "'only-in-test'"],
    "VARCHAR[]": ["['a', 'b']", "['b']", "NULL", "['only-in-test', 'a', 'b', 'c', 'd']"],
    "DOUBLE": ["1.0", "3.0", "NULL", "1e6"],
    "DOUBLE[]": ["[1.0, 2.0]", "[3.0]", "NULL", "[1e6, 1e6, 1e6, 1e6]"],
    "BIGINT[]": ["[10, 11]", "[11]", "NULL", "[12, 12, 12, 12]"],
}
PARAMS = {"categorify": {"min_count": 1, "max_len": 3},
          "normalize": {"transform": "standard"}, "bucketize": {"buckets": 4},
          "id_sequence": {"max_len": 3}, "float_sequence": {"max_len": 3}}
GROUP = {"categorify": "categorical", "normalize": "continuous", "bucketize": "continuous",
         "id_sequence": "temporal", "float_sequence": "temporal", "text_embedding": "text",
         "image_embedding": "image"}
CASES = [(name, t) for name in OPS.names() for t in OPS.get(name).accepts]


# id sequences hold item ids: as strings they must still name items 10..12
ID_STRINGS = ["['10', '11']", "['11']", "NULL", "['12', '12', '12', '12']"]


def _db(sql_type: str, group: str, fourth: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    base = ID_STRINGS if (group, sql_type) == ("temporal", "VARCHAR[]") else VALUES[sql_type]
    vals = base[:3] + [fourth or base[3]]
    rows = ", ".join(f"({i + 1}, {i}, {{'f': {v}::{sql_type}}})" for i, v in enumerate(vals))
    con.execute(f"CREATE TABLE users AS SELECT * FROM (VALUES {rows}) t(user_id, position, "
                f"{group})")
    con.execute("CREATE TABLE items AS SELECT * FROM (VALUES (10, 0), (11, 1), (12, 2)) "
                "t(item_id, position)")
    con.execute("CREATE TABLE user_map AS SELECT user_id, row_number() OVER (ORDER BY position)"
                "::INTEGER AS user_index FROM users")
    con.execute("CREATE TABLE item_map AS SELECT item_id, row_number() OVER (ORDER BY "
                "position)::INTEGER AS item_index FROM items")
    con.execute("CREATE TABLE train_users AS SELECT * FROM (VALUES (1), (2), (3)) t(user_id)")
    con.execute("CREATE TABLE train_items AS SELECT item_id FROM items")
    return con


def _run(name: str, sql_type: str, fourth: str | None = None):
    group = GROUP[name]
    multi = {"multi": sql_type.endswith("[]")} if name == "categorify" else {}
    spec = FeatureSpec("user", group, "f", name, {**PARAMS.get(name, {}), **multi})
    con = _db(sql_type, group, fourth)
    (op,) = fit_ops(con, [spec], base_dir="/data")
    # the embedding ops point into tables that embed_pools fills; a row per pooled value
    con.execute("CREATE TABLE text_embeddings AS SELECT row_number() OVER (ORDER BY text)"
                "::INTEGER AS text_index, text FROM (SELECT DISTINCT text FROM text_pool)")
    con.execute("CREATE TABLE image_embeddings AS SELECT row_number() OVER (ORDER BY path)"
                "::INTEGER AS image_index, path, false AS missing FROM (SELECT DISTINCT path "
                "FROM image_pool)")
    out = con.sql(op.transform_sql(Context(con, "/data"))).order("key").pl()
    state = (con.sql("SELECT * FROM vocab ORDER BY ALL").fetchall(),
             con.sql("SELECT * FROM stats ORDER BY ALL").fetchall(), op.state)
    return op, out, state


@pytest.mark.parametrize("name,sql_type", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_op_contract(name: str, sql_type: str) -> None:
    op, out, _ = _run(name, sql_type)
    assert out["key"].to_list() == [1, 2, 3, 4], "one row per entity"
    assert out.columns == ["key", *[o.column for o in op.outputs()]]
    missing = out.row(2, named=True)
    for o in op.outputs():
        col = out[o.column].to_list()
        if o.shape:
            assert all(len(v) == o.shape[0] for v in col), f"{o.column} not padded to shape"
        if o.column.endswith(".missing"):
            assert missing[o.column] == 1.0, "missing values raise the missing flag"
        elif o.shape:
            assert all(v == 0 for v in missing[o.column]), "missing -> the reserved 0 row"
        else:
            assert missing[o.column] == 0, "missing -> the reserved 0"
    present = out.row(0, named=True)
    assert any(present[o.column] not in (0, 0.0, [0] * (o.shape[0] if o.shape else 0))
               for o in op.outputs() if not o.column.endswith((".missing", ".length"))), \
        "a present value must not look missing"
    # the manifest can record it, and serving rebuilds the same fitted op from it
    back = Op.from_json(json.loads(json.dumps(op.to_json())))
    assert (type(back), back.spec, back.state, back.outputs()) == \
        (type(op), op.spec, json.loads(json.dumps(op.state)), op.outputs())


@pytest.mark.parametrize("name,sql_type", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_fit_sees_only_the_training_window(name: str, sql_type: str) -> None:
    other = {"VARCHAR": "'zzz'", "VARCHAR[]": "['10']" if name == "id_sequence" else "['zzz']",
             "DOUBLE": "-5e9", "DOUBLE[]": "[-5e9]", "BIGINT[]": "[10]"}[sql_type]
    if name in ("text_embedding", "image_embedding"):
        pytest.skip("embedding ops learn nothing: every value is embedded by a frozen model")
    assert _run(name, sql_type)[2] == _run(name, sql_type, fourth=other)[2]


def test_categorify_reserves_zero_for_unseen_and_rare_values() -> None:
    op, out, (vocab, _, state) = _run("categorify", "VARCHAR")
    assert [v[1:3] for v in vocab] == [("a", 1), ("b", 2)]
    assert out["categorical.f"].to_list() == [1, 2, 0, 0]  # 'only-in-test' is OOV
    assert state["vocab_size"] == 3


def test_multi_valued_lists_are_padded_and_cut() -> None:
    op, out, _ = _run("categorify", "VARCHAR[]")
    # 'b' (2 users) ranks before 'a' (1); values keep their order in the list
    assert out["categorical.f"].to_list() == [[2, 1, 0], [1, 0, 0], [0, 0, 0], [0, 2, 1]]
    assert out["categorical.f.length"].to_list() == [2, 1, 0, 3]
    assert op.counts["truncated_rows"] == 1


def test_sequences_keep_the_most_recent_last() -> None:
    op, out, _ = _run("id_sequence", "BIGINT[]", fourth="[10, 11, 12, 99]")
    assert out["temporal.f"].to_list() == [[0, 1, 2], [0, 0, 2], [0, 0, 0], [2, 3, 0]]
    assert out["temporal.f.length"].to_list() == [2, 1, 0, 3]
    assert op.counts["unknown_ids"] == 1


def test_normalize_standardises_with_train_stats() -> None:
    _, out, (_, stats, _) = _run("normalize", "DOUBLE")
    assert stats[0][2:4] == (2.0, 1.0)  # mean, std of 1 and 3 (user 4 is not train)
    assert out["continuous.f"].to_list() == [-1.0, 1.0, 0.0, pytest.approx(999998.0)]
    assert out["continuous.f.missing"].to_list() == [0.0, 0.0, 1.0, 0.0]


def test_bucketize_cuts_at_train_quantiles_and_reserves_zero_for_missing() -> None:
    op, out, (_, _, state) = _run("bucketize", "DOUBLE")
    assert state["edges"] == [1.5, 2.0, 2.5]  # quartiles of 1 and 3 (user 4 is not train)
    assert state["vocab_size"] == 5
    assert out["continuous.f"].to_list() == [1, 4, 0, 4]  # 1e6 lands in the last bucket

