"""featurize --append: A then B is one featurize of A + B under A's fitted statistics, and a
failed append leaves the store byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import invoke, one_error_line, tree_digest, write_doc

from unirec.datasets import synthesize


def _parts(root: Path) -> tuple[Path, Path, Path]:
    """A (the earlier 70% of interactions, without the last 5 items and users), B (the
    rest, the 5 new users and items, and one changed item) and A + B as one document."""
    doc = synthesize(60, 40, 1500, seed=5).document()
    inter = sorted(doc["interactions"], key=lambda r: r["timestamp"])
    cut = inter[int(len(inter) * 0.7)]["timestamp"]
    late_users = {u["user_id"] for u in doc["user_data"][-5:]}
    late_items = {i["item_id"] for i in doc["item_data"][-5:]}
    for user in doc["user_data"]:  # id lists name items A knows (else a float list)
        temporal = user.get("temporal") or {}
        for name, ids in temporal.items():
            if isinstance(ids, list):
                temporal[name] = [i for i in ids if i not in late_items]
    early = [r for r in doc["interactions"] if r["timestamp"] < cut and
             r["user_id"] not in late_users and r["item_id"] not in late_items]
    late = [r for r in doc["interactions"] if r not in early]
    changed = dict(doc["item_data"][0], categorical={**doc["item_data"][0]["categorical"],
                                                     "category": "a brand new category"})
    a = {"user_data": doc["user_data"][:-5], "item_data": doc["item_data"][:-5],
         "interactions": early}
    b = {"user_data": doc["user_data"][-5:], "item_data": [changed, *doc["item_data"][-5:]],
         "interactions": late}
    ab = {"user_data": doc["user_data"], "item_data": [changed, *doc["item_data"][1:]],
          "interactions": early + late}
    return (write_doc(root / "a.json", a), write_doc(root / "b.json", b),
            write_doc(root / "ab.json", ab))


def _rows(store: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(store / "features.duckdb"), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def appended(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("append")
    a, b, ab = _parts(root)
    assert invoke("featurize", a, "--store", root / "a").exit_code == 0
    assert invoke("featurize", a, "--store", root / "s").exit_code == 0
    out = invoke("featurize", "--append", b, "--store", root / "s")
    assert out.exit_code == 0, out.output
    assert "appended" in out.stdout and "5 new users" in out.stdout, out.stdout
    assert invoke("featurize", ab, "--store", root / "ab").exit_code == 0
    return root / "a", root / "s", root / "ab"


@pytest.mark.parametrize("query", [
    "SELECT * FROM samples ORDER BY position",
    "SELECT * FROM sample_history ORDER BY position",
    "SELECT * FROM user_map ORDER BY user_index",
    "SELECT * FROM item_map ORDER BY item_index",
    "SELECT * FROM user_sequences ORDER BY user_index",
    "SELECT * FROM item_popularity ORDER BY item_index",
    "SELECT position, user_id, item_id, timestamp FROM interactions ORDER BY position",
])
def test_append_gives_the_samples_of_one_featurize(appended, query) -> None:
    _, store, whole = appended
    assert _rows(store, query) == _rows(whole, query)


def test_append_keeps_indices_and_statistics_and_extends_vocabularies(appended) -> None:
    first, store, whole = appended
    vocab = "SELECT field, value, index FROM vocab ORDER BY field, index"
    old, new, full = _rows(first, vocab), _rows(store, vocab), _rows(whole, vocab)
    assert set(old) <= set(new)  # every existing index kept
    top = {}
    for field, _, index in old:
        top[field] = max(top.get(field, 0), index)
    added = [r for r in new if r not in set(old)]
    assert added and all(index > top.get(field, 0) for field, _, index in added)
    assert ("item.categorical.category", "a brand new category") in {r[:2] for r in added}
    # the same values as one featurize of A + B (min_count over the same window)
    assert {r[:2] for r in new} == {r[:2] for r in full}
    stats = "SELECT * FROM stats ORDER BY field"
    assert _rows(store, stats) == _rows(first, stats) != _rows(whole, stats)
    manifest = json.loads((store / "manifest.json").read_text())
    (entry,) = manifest["appends"]
    assert entry["counts"] == {"users_new": 5, "users_changed": 0, "items_new": 5,
                               "items_changed": 1, "interactions": entry["counts"]
                               ["interactions"]}
    assert len(entry["input"]["sha256"]) == 64
    report = json.loads((store / "report.json").read_text())
    assert report["appends"] == [entry]
    text = report["embeddings"]["text"]  # only the new strings (B's titles) are embedded
    assert 0 < text["embedded"] < text["strings"], text
    # B's interactions with the new items reach back in time: counted and warned about,
    # and (test above) placed exactly where one featurize of A + B puts them
    assert entry["out_of_order"] > 0
    assert any(w["count"] == entry["out_of_order"] for w in report["warnings"])
    first_manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["stats_id"] == first_manifest["stats_id"]
    assert manifest["ancestors"][0]["counts"] == first_manifest["counts"]


def test_leakage_rules_hold_after_an_append(appended) -> None:
    _, store, _ = appended
    bad = _rows(store, """
        SELECT count(*) FROM (SELECT user_index,
          max(time) FILTER (WHERE split = 'train') AS train_end,
          min(time) FILTER (WHERE split IN ('val', 'test')) AS held_start
          FROM samples GROUP BY user_index) WHERE train_end > held_start""")
    assert bad == [(0,)]


def test_a_failed_append_leaves_the_store_byte_identical(appended, tmp_path) -> None:
    first, _, _ = appended
    import shutil

    store = shutil.copytree(first, tmp_path / "store")
    before = tree_digest(store)
    cases = [
        ({"interactions": [{"user_id": 1, "item_id": 1, "timestamp": 5},
                           {"user_id": 1, "item_id": 1, "timestamp": "not a time"}]},
         "interactions[1]", "timestamp"),
        ({"interactions": [{"user_id": "nobody", "item_id": 1, "timestamp": 5}]},
         "interactions[0]", "user_id 'nobody' is not in user_data"),
        ({"item_data": [{"item_id": 999, "categorical": {"shiny": "yes"}}]},
         "item_data[0] (item_id 999): categorical.shiny", "cannot add fields"),
        ({"item_data": [{"item_id": "x9"}]}, "item_data[0]", "store's type"),
    ]
    for part, *needles in cases:
        doc = {"user_data": [], "item_data": [], "interactions": [], **part}
        result = invoke("featurize", "--append", write_doc(tmp_path / "b.json", doc),
                        "--store", store)
        one_error_line(result, *needles)
        assert tree_digest(store) == before
        assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_append_needs_a_store_and_keeps_its_config(tmp_path) -> None:
    doc = write_doc(tmp_path / "b.json", {"user_data": [], "item_data": [],
                                          "interactions": []})
    one_error_line(invoke("featurize", "--append", doc, "--store", tmp_path / "none"),
                   "needs an existing store", "unirec featurize DATA")
    one_error_line(invoke("featurize", "--append", doc, "--store", tmp_path / "none",
                          "--set", "features.min_count=3"), "store's own config")


def test_min_count_applies_over_the_whole_training_window(tmp_path) -> None:
    """A value below features.min_count in A that reaches it with B gets the next index;
    one still below stays out of the vocabulary (index 0)."""
    def part(users: list[tuple[int, str]], t0: int) -> dict:
        return {"user_data": [{"user_id": u, "categorical": {"country": c}} for u, c in users],
                "item_data": [{"item_id": 1}] if t0 == 0 else [],
                "interactions": [{"user_id": u, "item_id": 1, "timestamp": t0 + u}
                                 for u, _ in users]}

    a = part([(1, "US"), (2, "US"), (3, "FR"), (4, "DE")], 0)
    b = part([(5, "FR"), (6, "NL")], 100)
    store = tmp_path / "store"
    assert invoke("featurize", write_doc(tmp_path / "a.json", a), "--store", store, "--set",
                  "features.min_count=2").exit_code == 0
    import unirec

    unirec.featurize(write_doc(tmp_path / "b.json", b), store, append=True)
    assert _rows(store, "SELECT value, index FROM vocab ORDER BY index") == [("US", 1),
                                                                            ("FR", 2)]
    assert _rows(store, 'SELECT user_id, "categorical.country" FROM user_features '
                 "ORDER BY user_index") == [(1, 1), (2, 1), (3, 2), (4, 0), (5, 2), (6, 0)]


def test_an_append_reads_with_its_own_policies_and_keeps_the_store_config(appended,
                                                                          tmp_path) -> None:
    import shutil

    store = shutil.copytree(appended[0], tmp_path / "store")
    before = json.loads((store / "manifest.json").read_text())
    doc = {"user_data": [], "item_data": [], "interactions": [
        {"user_id": "nobody", "item_id": 1, "timestamp": 5}]}
    out = invoke("featurize", "--append", write_doc(tmp_path / "b.json", doc), "--store",
                 store, "--on-unknown-user", "drop")
    assert out.exit_code == 0, out.output
    assert "dropped 1 interactions records (unknown_user)" in out.stderr
    after = json.loads((store / "manifest.json").read_text())
    assert after["config_hash"] == before["config_hash"]  # what a model records
    assert after["appends"][-1]["validate"]["on_unknown_user"] == "drop"


def test_refit_stats_rebuilds_as_one_featurize_of_everything(appended, tmp_path) -> None:
    """--refit-stats: the store's raw tables (every input so far) plus the new records,
    every statistic and vocabulary refitted: what one featurize of A + B builds."""
    import shutil

    first, _, whole = appended
    store = shutil.copytree(first, tmp_path / "store")
    b = first.parent / "b.json"
    out = invoke("featurize", "--append", b, "--store", store, "--refit-stats")
    assert out.exit_code == 0, out.output
    for query in ("SELECT * FROM stats ORDER BY field",
                  "SELECT field, value, index FROM vocab ORDER BY field, index",
                  "SELECT * FROM samples ORDER BY position"):
        assert _rows(store, query) == _rows(whole, query), query
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["appends"][-1]["refit_stats"] is True
    assert manifest["stats_id"] != json.loads((first / "manifest.json").read_text())["stats_id"]
