"""New items (never in training) must be recommended: the content path carries an item alone.

The synthetic generator plants category preferences that titles, descriptions and images
name, so an item held out of training entirely can still be matched to the users who like its
category. A seeded 20% of items is held out (all their interactions go to test, as on the
MovieLens mixed protocol) and each user's last 20% of the rest joins test. Everything runs
through the CLI: featurize, fit, recommend --all-users.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import invoke

from unirec.config import TrainConfig
from unirec.datasets import synthesize, write_document

pytestmark = pytest.mark.slow

N_USERS, N_ITEMS, N_INTER, HOLD = 300, 300, 9000, 0.2
ITEM_FEATURES = ("item.categorical.category", "item.categorical.tags",
                 "item.categorical.weather", "item.categorical.audience",
                 "item.continuous.price", "item.temporal.price_history",
                 "item.text.title", "item.text.description", "item.image.main_image")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The held-out document featurized once, its test pairs and new item ids."""
    root = tmp_path_factory.mktemp("newitems")
    syn = synthesize(N_USERS, N_ITEMS, N_INTER, seed=3, images_dir=root / "images")
    inter = syn.interactions.with_row_index("row")
    rng = np.random.default_rng(0)
    seen = np.unique(inter["item_id"].to_numpy())
    new = np.sort(rng.choice(seen, int(HOLD * len(seen)), replace=False))
    on_new = inter.filter(pl.col("item_id").is_in(new.tolist()))
    warm = inter.filter(~pl.col("item_id").is_in(new.tolist())).sort("user_id", "timestamp")
    rank = warm.select(pl.col("user_id").cum_count().over("user_id").alias("r"),
                       pl.len().over("user_id").alias("n"))
    last = (rank["r"] > (rank["n"] * 0.8).floor()).to_numpy()
    test = pl.concat([warm.filter(pl.Series(last)), on_new])
    train = warm.filter(pl.Series(~last)).drop("row")
    doc = {"user_data": syn.users.to_dicts(), "item_data": syn.items.to_dicts(),
           "interactions": train.to_dicts()}
    write_document(doc, root / "data.json")
    store = root / "store"
    out = invoke("featurize", root / "data.json", "--store", store, "--split", "none")
    assert out.exit_code == 0, out.output
    (root / "new.csv").write_text("item_id\n" + "".join(f"{i}\n" for i in new))
    return {"root": root, "store": store, "new": new, "test": test.select("user_id", "item_id"),
            "cands": root / "new.csv"}


def _fit_and_recommend(world: dict, name: str, drop: tuple[str, ...] = (),
                       candidates: bool = False, **train) -> pl.DataFrame:
    """A fit on a copy of the store (``drop`` left out of the towers, ``train`` settings),
    then top-10 lists."""
    import shutil

    store = world["root"] / name
    if not (store / "model").is_dir():  # one fit per name in the module
        shutil.copytree(world["store"], store, dirs_exist_ok=True)
        cfg = world["root"] / f"{name}.json"
        cfg.write_text(json.dumps({"train": {"drop_features": list(drop), "batch_size": 256,
                                             **train}}))
        fit = invoke("fit", "--store", store, "--config", cfg, "--epochs", "5")
        assert fit.exit_code == 0, fit.output
    args = ["--candidates", world["cands"]] if candidates else []
    rec = invoke("recommend", "--store", store, "--all-users", "-k", "10", "--format", "csv",
                 *args)
    assert rec.exit_code == 0, rec.output
    return pl.read_csv(io.StringIO(rec.stdout)).select("user_id", "item_id")


def _recall(recs: pl.DataFrame, test: pl.DataFrame) -> float:
    """Recall@10 = hits / min(10, |test|), averaged over users with test pairs."""
    hits = recs.join(test, on=["user_id", "item_id"]).group_by("user_id").len("hits")
    per = (test.group_by("user_id").len("n").join(hits, on="user_id", how="left")
           .fill_null(0).with_columns(r=pl.col("hits") / pl.min_horizontal(10, pl.col("n"))))
    return float(per["r"].mean())


def test_new_items_get_their_share_of_hits(world) -> None:
    """Defaults: new items compete with warm ones and win their fair share of hits.

    new_parity = (new items' share of hits) / (their share of test pairs); on this fixture the
    defaults measured 1.67 (one run): the planted categories are in every content field, so
    new items are as easy as warm ones. 0.5 is the issue's MovieLens target, a wide floor.
    """
    recs = _fit_and_recommend(world, "defaults")
    test, new = world["test"], world["new"].tolist()
    hits = recs.join(test, on=["user_id", "item_id"])
    new_hits = hits["item_id"].is_in(new).mean()
    new_test = test["item_id"].is_in(new).mean()
    parity = new_hits / new_test
    print(f"new_parity={parity:.3f} hits={len(hits)}")
    assert parity >= 0.5, (parity, len(hits))


@pytest.mark.parametrize("kind", ["text", "image"])
def test_text_alone_and_images_alone_find_new_items(world, kind: str) -> None:
    """Among new items only, each content kind alone beats random by 2x Recall@10 (measured:
    text 0.77, images 0.78, random 0.21)."""
    drop = tuple(f for f in ITEM_FEATURES if f".{kind}." not in f)
    recs = _fit_and_recommend(world, f"{kind}_alone", drop, candidates=True)
    test = world["test"].filter(pl.col("item_id").is_in(world["new"].tolist()))
    got = _recall(recs, test)
    rng = np.random.default_rng(1)
    users = test["user_id"].unique().to_numpy()
    rand = np.mean([_recall(pl.DataFrame({
        "user_id": np.repeat(users, 10),
        "item_id": np.concatenate([rng.choice(world["new"], 10, replace=False) for _ in users])}),
        test) for _ in range(5)])
    print(f"{kind} alone: new-item recall@10={got:.3f} random={rand:.3f}")
    assert got >= 2 * rand, (kind, got, rand)


def test_new_items_are_served_the_mapped_vector(world) -> None:
    """train.new_item_map (default): items never trained get the warm vector predicted from
    their content, at length train.new_item_scale (warm items: 1), the same through the
    restored towers and as new item records; off, they keep the content-only unit vector."""
    import torch
    from safetensors import safe_open

    from unirec import explain
    from unirec.model.restore import load_model
    from unirec.serve.cold import embed_records
    from unirec.serve.recommender import Recommender

    _fit_and_recommend(world, "defaults")
    _fit_and_recommend(world, "no_map", new_item_map=False)
    scale = TrainConfig().new_item_scale  # the default
    for name, new_len in (("defaults", scale), ("no_map", 1.0)):
        store = world["root"] / name
        rec = Recommender.load(store)
        new = rec.item_index(world["new"].tolist())
        model = load_model(store)
        trained = model.item.ids.trained.numpy() > 0  # by item index; row 0 is padding
        assert not trained[new].any() and trained.sum() > len(trained) / 2
        d = model.item_table.embedding_dim  # the towers' own columns; the affinity's follow
        norms = np.linalg.norm(rec.items[:, :d], axis=1)
        np.testing.assert_allclose(norms[1:][~trained[1:]], new_len, atol=1e-5)
        np.testing.assert_allclose(norms[trained], 1.0, atol=1e-5)
        with safe_open(str(store / "model" / "new_items.safetensors"), "pt") as f:
            assert ("map" in f.keys()) == (name == "defaults")  # the affinity is in both
        with torch.no_grad():  # the restored towers reproduce the served vectors
            got = model.item(torch.from_numpy(new)).numpy()
        np.testing.assert_allclose(got, rec.items[new], atol=1e-5)
        doc = json.loads((world["root"] / "data.json").read_text())
        by_id = {r["item_id"]: r for r in doc["item_data"]}
        records = [{k: v for k, v in by_id[i].items() if k != "item_id"}
                   for i in world["new"][:5].tolist()]
        np.testing.assert_allclose(embed_records(store, "item", records), rec.items[new[:5]],
                                   atol=1e-4)
        user = int(world["test"]["user_id"][0])  # explanations add up to the served score
        why = explain(user, [int(world["new"][0])], store=store)[0]
        assert abs(why["recomputed"] - why["score"]) < 1e-4, why
        feats = {f["name"]: f for f in why["item_features"]}  # the affinity's term, exactly
        aff = feats["category_affinity"]
        d = model.item_table.embedding_dim
        u = rec.users[rec.user_index([user])[0]]
        assert abs(aff["contribution"] - float(u[d:] @ rec.items[new[0], d:])) < 1e-5, aff
        assert aff["contribution"] != 0 and aff["value"] == feats["categorical.tags"]["value"]
    # the map moves new items: not the content-only direction
    a = Recommender.load(world["root"] / "defaults").items[new]
    b = Recommender.load(world["root"] / "no_map").items[new]
    d = TrainConfig().dim
    assert np.mean(np.sum(a[:, :d] * b[:, :d], 1) / scale) < 0.999


def test_category_affinity_ranks_new_items_by_the_users_tags(world) -> None:
    """train.new_item_affinity (default): served vectors gain a column per value of the
    multi-valued categorical item fields (here tags). Trained items' are zero; a new item's
    are its tags' shares minus the catalogue's mean; a user's, how much more often than in
    the catalogue each tag occurs in their history, times the fitted weight. It is fitted
    after training, so a fit with it off has the same towers; among new items, the lists
    with it find more of the new items users went on to meet (measured: Recall@10 0.813 ->
    0.830, one run)."""
    from unirec.model.restore import load_model
    from unirec.serve.recommender import Recommender

    on_recs = _fit_and_recommend(world, "defaults", candidates=True)
    off_recs = _fit_and_recommend(world, "no_affinity", candidates=True, new_item_affinity=0.0)
    on, off = (Recommender.load(world["root"] / n) for n in ("defaults", "no_affinity"))
    d = off.items.shape[1]
    summary = json.loads((world["root"] / "defaults" / "model" / "config.json").read_text())
    aff = summary["summary"]["new_item_affinity"]
    assert aff["fields"] == ["categorical.tags"] and aff["weight"] > 0
    assert d == TrainConfig().dim and on.items.shape[1] == d + aff["columns"]
    np.testing.assert_allclose(on.items[:, :d], off.items[:, :d], atol=1e-5)
    np.testing.assert_allclose(on.users[:, :d], off.users[:, :d], atol=1e-5)
    model = load_model(world["root"] / "defaults")
    trained = model.item.ids.trained.numpy() > 0
    new = on.item_index(world["new"].tolist())
    assert not on.items[trained, d:].any() and (np.abs(on.items[new, d:]).sum(1) > 0).all()
    tags = model.item.gather(torch_tensor(new))["categorical.tags"].numpy()
    col = model.item.affinity.remap(0).numpy()  # tag -> its column (most frequent first)
    assert sorted(col[col > 0]) == list(range(1, aff["columns"]))  # every tag has one here
    shares = np.stack([np.bincount(col[t[t > 0]], minlength=aff["columns"]) / (t > 0).sum()
                       for t in tags])  # each new item's tags, 1/n each
    np.testing.assert_allclose(np.diff(on.items[new, d:] - shares, axis=0), 0, atol=1e-5)
    test = world["test"].filter(pl.col("item_id").is_in(world["new"].tolist()))
    got, base = _recall(on_recs, test), _recall(off_recs, test)
    print(f"new-item recall@10: affinity {got:.3f}, off {base:.3f}")
    assert got > base, (got, base)


def test_category_affinity_keeps_a_fields_most_frequent_values() -> None:
    """A field's columns are its most frequent values in the catalogue (at most
    ``max_values``; a tags field of 100k values must not add 100k columns to every served
    vector): rarer values, and the missing index 0, count nowhere."""
    import torch

    from unirec.model.affinity import Affinity

    ids = torch.tensor([[0, 0], [1, 2], [2, 3], [2, 4], [3, 0], [5, 0]])  # row 0: padding
    aff = Affinity([("tags", 6)], {"tags": ids}, max_values=2)
    assert aff.width == 3 and aff.remap(0).tolist() == [0, 0, 1, 2, 0, 0]  # 2, then 3
    got = aff.counts([torch.tensor([[2, 3], [4, 5], [1, 0]])])
    assert got.tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0]]
    shares = aff.item_part({"tags": torch.tensor([[2, 3], [4, 0]])}, torch.tensor([True, True]))
    np.testing.assert_allclose(shares[0, 1:] - shares[1, 1:], [0.5, 0.5], atol=1e-6)
    assert not aff.item_part({"tags": torch.tensor([[2, 3]])}, torch.tensor([False])).any()


def torch_tensor(x: np.ndarray):
    import torch

    return torch.from_numpy(np.asarray(x))


def test_drop_features_names_unknown_feature(world, tmp_path: Path) -> None:
    """A misspelt feature in train.drop_features is a one-line error naming it."""
    out = invoke("fit", "--store", world["store"], "--epochs", "1",
                 "--set", 'train.drop_features=["item.text.titel"]')
    assert out.exit_code != 0
    assert "item.text.titel" in out.output and "Traceback" not in out.output


def test_new_item_map_shrinks_towards_the_content_vector(world) -> None:
    """The map's prior is the content-only vector (what a new item gets without a map) moved
    by the warm items' mean offset (the intercept, never shrunk): an infinite ridge serves
    exactly that, and the strength leave-one-out chose is in the model's summary. A map
    shrunk towards zero instead collapsed small fits' new items onto one mean vector
    (2-epoch fits: 13 of 2,000 slots for a 20% share of items)."""
    import torch

    from unirec.model.newitems import fit_new_item_map
    from unirec.model.restore import load_model
    from unirec.serve.recommender import Recommender

    _fit_and_recommend(world, "defaults")
    store = world["root"] / "defaults"
    summary = json.loads((store / "model" / "config.json").read_text())["summary"]
    chosen = summary["new_item_map"]["ridge"]
    assert chosen > 0 and summary["new_item_map"]["scale"] == TrainConfig().new_item_scale
    model = load_model(store)
    model.set_affinity(None)  # the map alone: the towers' own columns
    tower = model.item
    new = torch.from_numpy(Recommender.load(store).item_index(world["new"].tolist()))
    warm = torch.nonzero(tower.ids.trained > 0).squeeze(1)
    warm = warm[warm > 0]
    with torch.no_grad():
        content = tower.fuse(tower.tokens(tower.gather(new), None))
        offset = (tower(warm) - tower.fuse(tower.tokens(tower.gather(warm), None))).mean(0)
        assert fit_new_item_map(model, 1.0, ridge=1e12) == 1e12
        np.testing.assert_allclose(tower(new).numpy(), torch.nn.functional.normalize(
            content + offset, dim=1).numpy(), atol=1e-4)
        fit_new_item_map(model, 1.0, ridge=chosen)
        assert (tower(new) - content).abs().max() > 1e-2  # the fitted map moves them
