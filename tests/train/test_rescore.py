"""train.rank.rescore (docs/ranking.md): a second two-tower re-orders the candidates people
met, new items stay where retrieval brought them (after the warm ones), auto judges it, and
the CLI says what it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_store, invoke

import unirec
from unirec.model.ranker import rescore_blend


def _fit(store: Path, *sets: str) -> str:
    out = invoke("fit", "--store", store, "--epochs", "3", "--set", "train.dim=16",
                 "--set", "train.rank.fit_on=train", "--set", "train.rank.epochs=2",
                 *[a for x in sets for a in ("--set", x)])
    assert out.exit_code == 0, out.output
    return out.stdout


def test_rescore_blend_standardises_each_users_valid_candidates() -> None:
    base = np.array([[3.0, 2.0, 1.0, 9.0]])
    other = np.array([[10.0, 30.0, 20.0, -5.0]])
    valid = np.array([[True, True, True, False]])
    z = np.array([1.0, 0.0, -1.0]) * np.sqrt(1.5)  # (x - mean) / population std
    got = rescore_blend(base, other, valid, 0.25)
    np.testing.assert_allclose(got[0, :3], 0.75 * z + 0.25 * np.array([-z[0], z[0], 0.0]))
    assert got[0, 3] == 0.0, "an invalid slot does not enter the statistics or the score"
    # a scale on either side changes nothing: only the orders count
    np.testing.assert_allclose(rescore_blend(100 * base, other / 7, valid, 0.25), got)


def test_rescoring_orders_warm_candidates_and_new_items_follow_them(
        tmp_path, holdout_store) -> None:
    """With the rescoring model's weight at 1, the served top-10 of every user is: the warm
    items of retrieval's top 200, best first by the rescoring model's own dot product
    (computed here from its saved vectors, not through the serving code), then the items
    without training interactions that retrieval put in its top 10, in its order
    (train.rank.new_items = "last", the default)."""
    store = copy_store(holdout_store, tmp_path / "store")
    stdout = _fit(store, "train.rank.enabled=true", "train.rank.rescore=true",
                  "train.rank.rescore_weight=1.0")
    assert "rescoring model (temperature 0.15" in stdout and "; in use" in stdout, stdout
    folder = store / "model" / "rank"
    meta = json.loads((folder / "rank.json").read_text())["rescore"]
    assert meta["active"] and meta["temperature"] == 0.15 and meta["weight"] == 1.0
    assert {"val_rescore_ndcg@10", "val_retrieval_ndcg@10", "val_rescore_gain_z"} <= \
        set(meta["validation"])
    ru, ri = np.load(folder / "rescore_user.npy"), np.load(folder / "rescore_item.npy")
    trained = np.load(folder / "item_trained.npy")
    rec = unirec.Recommender.load(store)
    assert ru.shape[0] == rec.n_users + 1 and ri.shape == (rec.n_items + 1, ru.shape[1])
    assert not np.allclose(ri, np.asarray(rec.items)[:, :ri.shape[1]]), "a model of its own"
    new = {int(x) for x in (holdout_store.parent / "new_items.csv").read_text().split()[1:]}
    users = list(rec.user_ids(np.arange(1, rec.n_users + 1)))
    served, _ = unirec.recommend(users, 10, store=store)
    pool, scores = unirec.recommend(users, 200, store=store, stage="retrieve")
    moved = 0
    for u, got, cand, s in zip(users, served, pool, scores, strict=True):
        cand = cand[~np.isnan(s)]  # the catalogue (40 items) runs out before 200
        idx = rec.item_index([int(i) for i in cand])
        fixed = ~trained[idx]
        assert {int(cand[j]) for j in np.flatnonzero(fixed)} <= new
        warm = idx[~fixed]
        order = warm[np.argsort(-(ri[warm] @ ru[rec.user_index([u])[0]]), kind="stable")]
        fresh = [int(i) for i in cand[:10][fixed[:10]]]
        want = [int(i) for i in rec.item_ids(order[:10 - len(fresh)])] + fresh
        assert [int(i) for i in got] == want
        moved += want != [int(i) for i in cand[:10]]
    assert moved > len(users) // 4, "the warm items are re-ordered for many users"
    assert any(int(i) in new for row in served for i in row), "new items are still served"


def test_both_models_are_judged_against_retrieval_with_new_items_placed(
        tmp_path, holdout_store) -> None:
    """Moving new items after the warm ones (train.rank.new_items = "last") gains on its
    own, so each model is judged against retrieval with new items so placed: against
    retrieval's raw order, auto would keep either model for the placement's gain. The same
    fit under "retrieval" (new items in their slots, the raw order) judges against another
    baseline, from the same retrieval model."""
    metas = {}
    for rule in ("last", "retrieval"):
        store = copy_store(holdout_store, tmp_path / rule)
        _fit(store, "train.rank.enabled=true", "train.rank.rescore=true",
             f"train.rank.new_items={rule}")
        metas[rule] = json.loads((store / "model" / "rank" / "rank.json").read_text())
        assert metas[rule]["config"]["new_items"] == rule
    for part in (lambda m: m["validation"], lambda m: m["rescore"]["validation"]):
        last, raw = part(metas["last"]), part(metas["retrieval"])
        assert last["val_retrieval_ndcg@10"] != raw["val_retrieval_ndcg@10"], (last, raw)


def test_auto_drops_the_rescoring_model_that_does_not_help(tmp_path, holdout_store) -> None:
    """auto keeps it only at train.rank.min_z standard errors of gain on the judging users;
    dropped, the model serves retrieval (the interaction model dropped too), and the CLI
    and rank.json say why. Its epochs are in metrics.jsonl, tagged with their stage."""
    store = copy_store(holdout_store, tmp_path / "store")
    stdout = _fit(store, "train.rank.min_z=1000000")
    assert "rescoring model (temperature 0.15" in stdout, stdout
    assert "not used (it did not beat retrieval by train.rank.min_z (1e+06)" in \
        stdout.splitlines()[-1], stdout
    meta = json.loads((store / "model" / "rank" / "rank.json").read_text())
    assert not meta["active"] and not meta["rescore"]["active"]
    rows = [json.loads(x) for x in (store / "model" / "metrics.jsonl").read_text().split("\n")
            if x]
    epochs = [r["rescore_epoch"] for r in rows if r.get("stage") == "rescore"]
    assert epochs and epochs == list(range(1, len(epochs) + 1))
    got = json.loads(invoke("evaluate", "--store", store, "--format", "json").stdout)
    assert got["stage"] == "retrieve"
    user = unirec.Recommender.load(store).user_ids(np.array([1]))[0]
    plain, _ = unirec.recommend(user, 10, store=store, stage="retrieve")
    assert list(unirec.recommend(user, 10, store=store)[0]) == list(plain)


@pytest.mark.parametrize("setting", ["train.rank.rescore=false", "train.rank.enabled=false"])
def test_rescoring_off_trains_no_second_model(tmp_path, holdout_store, setting) -> None:
    store = copy_store(holdout_store, tmp_path / "store")
    stdout = _fit(store, setting)
    assert "rescoring model" not in stdout
    assert not (store / "model" / "rank" / "rescore_user.npy").exists()
    rows = (store / "model" / "metrics.jsonl").read_text()
    assert '"stage": "rescore"' not in rows


def test_without_a_validation_slice_auto_trains_no_rescoring_model(tmp_path,
                                                                   holdout_store) -> None:
    """auto has nothing to judge the second model on: it is not trained, and the fit says
    why."""
    data = holdout_store.parent / "data.json"
    store = tmp_path / "store"
    out = invoke("featurize", data, "--store", store, "--set", "split.val_fraction=0")
    assert out.exit_code == 0, out.output
    stdout = _fit(store)
    assert "rescoring model: not used (no validation slice" in stdout, stdout
    assert '"stage": "rescore"' not in (store / "model" / "metrics.jsonl").read_text()
    assert not (store / "model" / "rank" / "rescore_user.npy").exists()
