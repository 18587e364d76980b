"""Serving known users and items through the CLI and the Python API, checked against a
brute-force reference computed here from the fitted vectors and the store's interactions."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import invoke

import unirec
from unirec.serve.recommender import Recommender
from unirec.store import Store


@pytest.fixture(scope="module")
def ref(fitted_store):
    """Vectors, ids and each user's seen items, read the slow, obvious way."""
    model = fitted_store / "model"
    users, items = np.load(model / "user_embeddings.npy"), np.load(model / "item_embeddings.npy")
    st = Store(fitted_store)
    user_ids = st.sql("SELECT user_id FROM user_map ORDER BY user_index")["user_id"].to_list()
    item_ids = st.sql("SELECT item_id FROM item_map ORDER BY item_index")["item_id"].to_list()
    seen = st.sql("SELECT DISTINCT um.user_index AS u, im.item_index AS i FROM interactions "
                  "JOIN user_map um USING (user_id) JOIN item_map im USING (item_id)")
    seen_by = {}
    for u, i in seen.iter_rows():
        seen_by.setdefault(u, set()).add(i)
    return {"users": users, "items": items, "user_ids": [None, *user_ids],
            "item_ids": [None, *item_ids], "seen": seen_by}


def brute_top(ref, vector, k, exclude=(), allowed=None):
    """Reference top-k: float64 scores, best first, ties by the lower item index."""
    scores = ref["items"][1:].astype(np.float64) @ vector.astype(np.float64)
    order = sorted(range(1, len(ref["items"])), key=lambda i: (-scores[i - 1], i))
    keep = [i for i in order if i not in exclude and (allowed is None or i in allowed)]
    return [ref["item_ids"][i] for i in keep[:k]], [scores[i - 1] for i in keep[:k]]


def assert_same_ranking(got_ids, got_scores, want_ids, want_scores):
    """Equal lists, except that two items whose scores agree to float32 precision may swap."""
    assert len(got_ids) == len(want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    for g, w, s in zip(got_ids, want_ids, want_scores, strict=True):
        assert g == w or abs(s - dict(zip(want_ids, want_scores, strict=True)).get(g, 9)) < 1e-5


def test_recommend_one_user_table_json_csv(fitted_store, ref) -> None:
    user = ref["user_ids"][5]
    want_ids, want_scores = brute_top(ref, ref["users"][5], 10, ref["seen"][5])
    out = invoke("recommend", "--user", user, "-k", "10", "--store", fitted_store,
                 "--format", "json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert_same_ranking([r["item_id"] for r in rows], [r["score"] for r in rows], want_ids,
                        want_scores)
    assert all(r["title"] for r in rows), "the items have titles: show them"
    assert not {r["item_id"] for r in rows} & {ref["item_ids"][i] for i in ref["seen"][5]}
    table = invoke("recommend", "--user", user, "-k", "3", "--store", fitted_store)
    assert table.stdout.splitlines()[0].split() == ["rank", "item_id", "score", "title"]
    assert len(table.stdout.splitlines()) == 2 + 3
    text = invoke("recommend", "--user", user, "--store", fitted_store, "--format", "csv")
    assert list(csv.DictReader(text.stdout.splitlines()))[0]["item_id"] == str(rows[0]["item_id"])


def test_include_seen_and_candidates(fitted_store, ref, tmp_path) -> None:
    user = ref["user_ids"][9]
    ids, scores = unirec.recommend(user, 10, store=fitted_store, exclude_seen=False)
    want = brute_top(ref, ref["users"][9], 10)
    assert_same_ranking(list(ids), list(scores), *want)
    allowed = set(range(1, 40, 3))
    cand = tmp_path / "cand.csv"
    cand.write_text("item_id\n" + "\n".join(str(ref["item_ids"][i]) for i in allowed) + "\n")
    out = invoke("recommend", "--user", user, "-k", "5", "--candidates", cand, "--store",
                 fitted_store, "--format", "json")
    got = json.loads(out.stdout)
    want_ids, want_scores = brute_top(ref, ref["users"][9], 5, ref["seen"][9], allowed)
    assert_same_ranking([r["item_id"] for r in got], [r["score"] for r in got], want_ids,
                        want_scores)
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n1\n")
    out = invoke("recommend", "--user", user, "--candidates", bad, "--store", fitted_store)
    assert out.exit_code == 1 and "no item_id column" in out.stderr
    bad.write_text("item_id\nno-such-item\n")
    out = invoke("recommend", "--user", user, "--candidates", bad, "--store", fitted_store)
    assert out.exit_code == 1 and "'no-such-item' is not in the catalogue" in out.stderr


def test_many_users_batch_equals_one_at_a_time(fitted_store, ref, tmp_path) -> None:
    users = [ref["user_ids"][i] for i in (1, 2, 3, 50, 120)]
    ids, scores = unirec.recommend(users, 7, store=fitted_store)
    assert ids.shape == scores.shape == (5, 7)
    for row, u in enumerate(users):
        one_ids, one_scores = unirec.recommend(u, 7, store=fitted_store)
        assert_same_ranking(list(ids[row]), list(scores[row]), list(one_ids),
                            list(one_scores))
    out = invoke("recommend", "--users", ",".join(map(str, users)), "-k", "7", "--store",
                 fitted_store, "--format", "csv")
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert len(rows) == 35 and rows[7]["user_id"] == str(users[1]) and rows[7]["rank"] == "1"
    listing = tmp_path / "users.txt"
    listing.write_text("\n".join(map(str, users)) + "\n")
    again = invoke("recommend", "--users-file", listing, "-k", "7", "--store", fitted_store,
                   "--format", "csv")
    assert again.stdout == out.stdout


def test_all_users_csv_and_parquet(fitted_store, ref, tmp_path) -> None:
    out = invoke("recommend", "--all-users", "-k", "4", "--store", fitted_store)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(out.stdout.splitlines()))
    n_users = len(ref["user_ids"]) - 1
    assert set(rows[0]) == {"user_id", "item_id", "rank", "score"}
    assert len(rows) == 4 * n_users
    first = [r for r in rows if r["user_id"] == str(ref["user_ids"][5])]
    want_ids, _ = brute_top(ref, ref["users"][5], 4, ref["seen"][5])
    assert [r["item_id"] for r in first] == [str(i) for i in want_ids]
    path = tmp_path / "all.parquet"
    assert invoke("recommend", "--all-users", "-k", "4", "--out", path, "--store",
                  fitted_store).exit_code == 0
    table = pq.read_table(path)
    assert table.num_rows == 4 * n_users and table.column_names == [
        "user_id", "item_id", "rank", "score"]


def test_unknown_user_errors_or_falls_back(fitted_store) -> None:
    out = invoke("recommend", "--user", "nobody-42", "--store", fitted_store)
    assert out.exit_code == 1
    assert "user 'nobody-42' is not in the store" in out.stderr
    assert "--user-json" in out.stderr and "--fallback popular" in out.stderr
    assert "Traceback" not in out.output
    pop = Store(fitted_store).sql(
        "SELECT m.item_id FROM item_popularity p JOIN item_map m USING (item_index) "
        "ORDER BY p.train_count DESC, p.item_index LIMIT 3")["item_id"].to_list()
    out = invoke("recommend", "--user", "nobody-42", "-k", "3", "--fallback", "popular",
                 "--store", fitted_store, "--format", "json")
    assert [r["item_id"] for r in json.loads(out.stdout)] == pop
    assert invoke("recommend", "--store", fitted_store).exit_code == 2  # no user given


def test_similar_score_embed(fitted_store, ref, tmp_path) -> None:
    item = ref["item_ids"][17]
    out = invoke("similar", "--item", item, "-k", "5", "--store", fitted_store, "--format",
                 "json")
    got = json.loads(out.stdout)
    want_ids, want_scores = brute_top(ref, ref["items"][17], 5, {17})
    assert_same_ranking([r["item_id"] for r in got], [r["score"] for r in got], want_ids,
                        want_scores)
    pair = [ref["item_ids"][3], ref["item_ids"][40]]
    out = invoke("score", "--user", ref["user_ids"][8], "--item", f"{pair[0]},{pair[1]}",
                 "--store", fitted_store, "--format", "json")
    scores = [r["score"] for r in json.loads(out.stdout)]
    np.testing.assert_allclose(scores, ref["items"][[3, 40]] @ ref["users"][8], atol=1e-5)
    assert invoke("similar", "--item", "nope", "--store", fitted_store).exit_code == 1
    path = tmp_path / "users.parquet"
    out = invoke("embed", "users", "--out", path, "--store", fitted_store)
    assert out.exit_code == 0, out.output
    table = pq.read_table(path)
    assert table.column("user_id").to_pylist() == ref["user_ids"][1:]
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(
        zero_copy_only=False)), ref["users"][1:])


def test_ties_break_by_item_index() -> None:
    """Identical item vectors: the earlier item (input order) comes first, every time."""
    items = np.array([[0, 0], [1, 0], [0, 1], [1, 0], [1, 0], [0.5, 0.5]], np.float32)
    arrays = {"user_embeddings": np.zeros((2, 2), np.float32), "item_embeddings": items}
    rec = Recommender(None, arrays, {})
    idx, scores = rec.rank(np.array([[1.0, 0.0]]), 4)
    assert idx.tolist() == [[1, 3, 4, 5]]
    idx, _ = rec.rank(np.array([[1.0, 0.0]]), 9)  # k is clamped to the catalogue
    assert idx.tolist() == [[1, 3, 4, 5, 2]]  # and the padding item never surfaces
    idx, _ = rec.rank(np.array([[1.0, 0.0]]), 9, candidates=np.array([2, 3]))
    assert idx.tolist() == [[3, 2, -1, -1, -1]]  # fewer allowed items: padded with -1


def test_evaluate_agrees_with_the_protocol_evaluator(fitted_store, tmp_path) -> None:
    from test_metrics import _protocol_evaluate

    protocol = _protocol_evaluate()
    recs = tmp_path / "recs.csv"
    out = invoke("evaluate", "-k", "10", "--recs-out", recs, "--store", fitted_store,
                 "--format", "json")
    assert out.exit_code == 0, out.output
    ours = json.loads(out.stdout)
    st = Store(fitted_store)
    pairs = ("SELECT u.user_id, i.item_id FROM samples s JOIN user_map u USING (user_index) "
             "JOIN item_map i USING (item_index) WHERE s.split {} 'test'")
    test = st.sql(pairs.format("=")).rows()
    train = st.sql(pairs.format("<>")).rows()
    as_sets = lambda rows: {u: {i for uu, i in rows if uu == u} for u, _ in rows}  # noqa: E731
    lists = {}
    for row in csv.DictReader(recs.read_text().splitlines()):
        lists.setdefault(int(row["user_id"]), []).append(int(row["item_id"]))
    theirs = protocol(as_sets(test), as_sets(train), lists, k=10, n_items=ours["items"])
    for key in ("recall@10", "ndcg@10", "hr@10", "map@10", "coverage"):
        assert round(ours[key], 4) == round(theirs[key], 4), key
    assert ours["users"] == len(as_sets(test)) and ours["train_violations"] == 0


def test_stale_model_is_refused(fitted_store, tmp_path) -> None:
    store = tmp_path / "store"
    shutil.copytree(fitted_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["config_hash"] = "0" * 16  # as if featurized again with other settings
    (store / "manifest.json").write_text(json.dumps(manifest))
    out = invoke("recommend", "--user", "1", "--store", store)
    assert out.exit_code == 1 and "run `unirec fit" in out.stderr


def test_known_user_path_never_imports_torch(fitted_store, ref) -> None:
    code = ("import sys; from unirec.cli.main import cli\n"
            f"cli(['recommend', '--user', '{ref['user_ids'][2]}', '--store', "
            f"'{fitted_store}'], standalone_mode=False)\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'polars', 'duckdb', 'sentence_transformers', 'timm'})\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_ann_agrees_with_exact_and_caches_its_index(fitted_store, ref, tmp_path) -> None:
    pytest.importorskip("usearch", reason="the ann extra (usearch) is not installed")
    store = tmp_path / "store"
    shutil.copytree(fitted_store, store)
    users = [ref["user_ids"][i] for i in range(1, 41)]
    exact, _ = unirec.recommend(users, 10, store=store)
    approx, scores = unirec.recommend(users, 10, store=store, ann=True)
    assert (store / "model" / "items.usearch").is_file()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9, recall
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "best first"
    for row, u in enumerate(users):  # seen items stay excluded on the approximate path too
        index = ref["user_ids"].index(u)
        assert not set(approx[row]) & {ref["item_ids"][i] for i in ref["seen"][index]}
    out = invoke("recommend", "--user", users[0], "--ann", "-k", "3", "--store", store,
                 "--format", "json")
    assert [r["item_id"] for r in json.loads(out.stdout)] == list(approx[0][:3])
