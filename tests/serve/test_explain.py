"""Explanations: on the synthetic generator (planted preferred categories) the history items an
explanation names share the recommended item's category far more often than chance; the
deltas add up to the served score as documented, and one of them is checked against an
independent path (a cold-start record); the CLI, the Python API and the explanations table
say the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_store, invoke, run_unirec

from unirec.model.restore import user_histories
from unirec.serve import api
from unirec.serve.explain import explainer
from unirec.store import Store

# the top history item (by leave-one-out contribution) must share the recommended item's
# category at least this many times as often as a history item of the same user drawn at
# random (measured on this fixture: ~2.5x by contribution, ~3.4x by similarity)
MARGIN = 1.8


@pytest.fixture(scope="module")
def explained(fitted_store):
    """Every user's top-10, explained in one batch, plus each item index's category."""
    ex = explainer(fitted_store)
    rec = ex.rec
    users = np.arange(1, rec.n_users + 1)
    idx, scores = rec.recommend_index(users, 10)
    cats = Store(fitted_store).sql(
        "SELECT m.item_index AS i, i.categorical.category AS c FROM items i "
        "JOIN item_map m USING (item_id) ORDER BY 1")
    category = np.concatenate([[-1], np.unique(cats["c"].to_numpy(), return_inverse=True)[1]])
    return ex, ex.explain(users, idx, scores), category


@pytest.mark.parametrize("key", ["history_delta", "similarity"])
def test_top_history_items_share_the_category_far_more_than_chance(explained, key) -> None:
    _, e, category = explained
    valid = ~np.isnan(e.history_delta)  # (users, 10, L): distinct history items
    same = category[e.history][:, None, :] == category[e.items][..., None]
    has = valid.any(-1)
    chance = ((same & valid).sum(-1) / np.maximum(valid.sum(-1), 1))[has].mean()
    top = np.nanargmax(np.where(valid, getattr(e, key), -np.inf), -1)
    hit = np.take_along_axis(same, top[..., None], -1)[..., 0][has].mean()
    print(f"\n{key}: top history item shares the category {hit:.3f} vs chance {chance:.3f} "
          f"({hit / chance:.1f}x)")
    assert hit >= MARGIN * chance, (hit, chance)


def test_deltas_add_up_to_the_served_score(explained) -> None:
    ex, e, _ = explained
    np.testing.assert_allclose(e.recomputed, e.score, atol=1e-5)
    total = e.baseline + e.user_delta.sum(-1) + e.item_delta.sum(-1) + e.interaction
    np.testing.assert_allclose(total, e.score, atol=1e-5)
    # empty history slots have no delta; every user here has some history
    empty = np.broadcast_to((e.history == 0)[:, None], e.history_delta.shape)
    assert np.isnan(e.history_delta[empty]).all() and (~np.isnan(e.history_delta)).any()
    assert np.isfinite(e.user_delta).all() and np.isfinite(e.item_delta).all()
    assert np.abs(e.user_delta).max() > 1e-3 and np.abs(e.item_delta).max() > 1e-3
    assert e.user_tokens[-2:] == ["user_id", "history"] and "item_id" in e.item_tokens


def test_a_delta_matches_an_independent_path(fitted_store, explained) -> None:
    """Leaving out the user_id token = the same user as a new record (no trained id) with
    the same features and history, scored through cold start: a different code path."""
    ex, e, _ = explained
    rec = ex.rec
    doc = json.loads(Path(Store(fitted_store).manifest["input"]["path"]).read_text())
    hist = user_histories(fitted_store)
    for row in (0, 4):
        user = e.users[row]
        record = next(r for r in doc["user_data"] if r["user_id"] == rec.user_ids([user])[0])
        items = hist[user][hist[user] > 0]
        record = {k: v for k, v in record.items() if k != "user_id"}
        record["history"] = [i.item() for i in rec.item_ids(items)]
        ids = rec.item_ids(e.items[row])
        cold = api.score(None, list(ids), store=fitted_store, user_record=record)
        t = e.user_tokens.index("user_id")
        np.testing.assert_allclose(cold, e.score[row] - e.user_delta[row, :, t], atol=1e-4)


def test_python_api_explains_given_items_and_the_top_k(fitted_store) -> None:
    import unirec

    top = unirec.explain(17, k=5, store=fitted_store)
    ids, scores = api.recommend(17, 5, store=fitted_store)
    assert [t["item_id"] for t in top] == ids.tolist() and [t["rank"] for t in top] == [1, 2,
                                                                                         3, 4, 5]
    np.testing.assert_allclose([t["score"] for t in top], scores, atol=1e-6)
    first = top[0]
    assert first["ranking"] is None and first["history"] and first["user_features"]
    deltas = [h["contribution"] for h in first["history"]]
    assert deltas == sorted(deltas, reverse=True)
    assert all({"item_id", "title", "similarity", "attention"} <= set(h) for h in first["history"])
    # an item named explicitly keeps the rank it has in the user's full ranking
    again = unirec.explain(17, [ids[2], ids[0]], store=fitted_store)
    assert [a["rank"] for a in again] == [3, 1]
    np.testing.assert_allclose([a["score"] for a in again], scores[[2, 0]], atol=1e-5)


def test_cli_rows_and_the_explanations_table_agree(fitted_store, tmp_path) -> None:
    store = copy_store(fitted_store, tmp_path / "store")
    out = invoke("recommend", "--all-users", "--explain", "-k", "5", "--top", "2",
                 "--store", store)
    assert out.exit_code == 0, out.output
    assert "explanations table" in out.stderr
    table = Store(store).sql("SELECT * FROM explanations WHERE user_id IN (3, 17) "
                             "ORDER BY user_id, rank, kind, name").to_dicts()
    rows = []
    for user in (3, 17):
        got = invoke("explain", "--user", user, "-k", "5", "--top", "2", "--format", "json",
                     "--store", store)
        assert got.exit_code == 0, got.output
        rows += json.loads(got.stdout)
    rows.sort(key=lambda r: (r["user_id"], r["rank"], r["kind"], r["name"]))
    assert len(rows) == len(table) > 5 * 2 * 3
    for a, b in zip(rows, table, strict=True):
        assert {k: a[k] for k in ("user_id", "rank", "item_id", "kind", "name", "value")} == \
            {k: b[k] for k in ("user_id", "rank", "item_id", "kind", "name", "value")}
        for k in ("score", "contribution", "similarity", "attention"):
            assert (a[k] is None) == (b[k] is None or np.isnan(b[k]))
            if a[k] is not None:
                assert abs(a[k] - b[k]) < 1e-5
    # recommend --explain prints the same rows as explain; CSV through a real process
    same = invoke("recommend", "--user", "3", "-k", "5", "--top", "2", "--explain",
                  "--format", "json", "--store", store)
    assert sorted(json.loads(same.stdout), key=lambda r: (r["rank"], r["kind"], r["name"])) \
        == [r for r in rows if r["user_id"] == 3]
    proc = run_unirec("explain", "--user", "3", "--item", "5", "--format", "csv",
                      "--store", store)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "user_id,rank,item_id,score,kind,name,value,contribution,similarity," \
        "attention" and len(lines) == 1 + 9
    table_view = invoke("explain", "--user", "3", "-k", "2", "--store", store)
    assert "history" in table_view.stdout and "item_feature" in table_view.stdout


def test_explain_errors_are_one_line(fitted_store) -> None:
    for args, needle in ((["explain", "--user", "nobody"], "not in the store"),
                         (["explain", "--user", "3", "--item", "999999"], "not in the catalogue")):
        out = invoke(*args, "--store", fitted_store)
        assert out.exit_code == 1 and needle in out.stderr, out.output
        assert len(out.stderr.strip().splitlines()) == 1
    out = invoke("recommend", "--user-json", "{}", "--explain", "--store", fitted_store)
    assert out.exit_code == 2 and "--explain works with known users" in out.output
