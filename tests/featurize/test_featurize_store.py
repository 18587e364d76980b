"""The compiled store end to end through the CLI: leakage, tensors, shards, cache, plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke
from safetensors.numpy import load_file

from unirec import Store
from unirec.datasets import synthesize, write_document, write_folder
from unirec.model.inputs import gather_history
from unirec.store.shards import read_blocks


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compiled")
    data = synthesize(120, 60, 2500, seed=3, images_dir=root / "images")
    doc = root / "data.json"
    write_document(data, doc)
    result = invoke("featurize", doc, "--store", root / "store")
    assert result.exit_code == 0, result.output
    return root, root / "store"


def test_history_never_holds_the_present_or_future(built) -> None:
    store = Store(built[1])
    leaks = store.sql(
        "WITH h AS (SELECT s.position, s.user_index, s.time, unnest(s.history) AS item "
        "FROM sample_history s) SELECT count(*) AS n FROM h WHERE NOT EXISTS ("
        "SELECT 1 FROM samples p WHERE p.user_index = h.user_index AND p.item_index = h.item "
        "AND p.time < h.time)")
    assert leaks["n"][0] == 0
    # by reference: every referenced sequence item lies strictly before the sample's time
    seq = load_file(str(built[1] / "tensors" / "sequences.safetensors"))
    refs = store.sql("SELECT history_end, history_length, epoch_us(time) AS t FROM samples")
    end, n, t = (refs[c].to_numpy().astype(np.int64) for c in ("history_end",
                                                                "history_length", "t"))
    assert n.max() == store.manifest["samples"]["history_length"]
    for k in range(1, n.max() + 1):
        has = n >= k
        assert (seq["times"][end[has] - k] < t[has]).all()
    assert (seq["times"][end] == t).all()  # the sample's own time starts right at the end


def test_gathered_histories_equal_the_old_materialised_ones(built) -> None:
    """Store format 1 kept a window list() per sample; gathering by reference (what fit
    does) must give exactly those lists on the synthetic generator's data."""
    store = Store(built[1])
    width = store.manifest["samples"]["history_length"]
    old = store.sql(
        f"SELECT position, list_concat(list_slice(repeat([0]::INTEGER[], {width}), 1, "
        f"{width} - len(hist)), hist) AS h FROM (SELECT *, coalesce(list(item_index) OVER ("
        "PARTITION BY user_index ORDER BY time, position ROWS BETWEEN tie + "
        f"{width} PRECEDING AND tie + 1 PRECEDING), []::INTEGER[]) AS hist FROM (SELECT "
        "i.position, u.user_index, m.item_index, i.timestamp AS time, row_number() OVER ("
        "PARTITION BY u.user_index, i.timestamp ORDER BY i.position) - 1 AS tie FROM "
        "interactions i JOIN user_map u USING (user_id) JOIN item_map m USING (item_id))) "
        "WHERE position IN (SELECT position FROM samples) ORDER BY position")
    refs = store.sql("SELECT history_end, history_length FROM samples ORDER BY position")
    items = torch.from_numpy(load_file(str(built[1] / "tensors" / "sequences.safetensors"))
                             ["items"])
    got = gather_history(items, torch.tensor(refs["history_end"].to_numpy()),
                         torch.tensor(refs["history_length"].to_numpy()), width)
    assert len(old) == len(got) > 1000
    assert np.array_equal(got.numpy(), np.array(old["h"].to_list()))
    assert (refs["history_length"].to_numpy() == width).any()  # some histories are full
    lengths = store.sql("SELECT count(*) AS n FROM sample_history WHERE len(history) <> "
                        "history_length")["n"][0]
    assert lengths == 0


def test_validation_and_test_pairs_never_train(built) -> None:
    store = Store(built[1])
    overlap = store.sql(
        "SELECT count(*) AS n FROM samples t JOIN samples o ON t.position = o.position "
        "WHERE t.split = 'train' AND o.split IN ('val', 'test')")
    assert overlap["n"][0] == 0
    order = store.sql(
        "SELECT count(*) AS n FROM samples a JOIN samples b USING (user_index) "
        "WHERE a.split = 'train' AND b.split IN ('val', 'test') AND a.time > b.time")
    assert order["n"][0] == 0, "a user's training samples precede their held-out ones"
    pop = store.sql("SELECT sum(train_count) AS n FROM item_popularity")["n"][0]
    assert pop == store.sql("SELECT count(*) AS n FROM samples WHERE split = 'train'")["n"][0]


def test_vocab_and_stats_see_only_the_training_window(tmp_path, doc) -> None:
    # item 12 is only ever in user 3's last interaction (test), so its category is unseen
    doc["user_data"][2]["user_id"] = 3
    doc["item_data"][2]["categorical"] = {"cat": "test-only"}
    doc["item_data"][2]["continuous"] = {"price": 1e9}
    doc["interactions"] = [
        {"user_id": 3, "item_id": i, "timestamp": 1700000000 + t}
        for t, i in enumerate([10, 11, 10, 11, 10, 12])
    ]
    from conftest import write_doc

    result = invoke("featurize", write_doc(tmp_path / "d.json", doc), "--store",
                    tmp_path / "s", "--set", "split.val_fraction=0")
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "s")
    assert store.sql("SELECT item_index FROM samples WHERE split = 'test'").rows() == [(3,)]
    vocab = store.sql("SELECT value FROM vocab WHERE field = 'item.categorical.cat'")
    assert "test-only" not in vocab["value"].to_list()
    cat = store.sql('SELECT "categorical.cat" AS c FROM item_features WHERE item_id = 12')
    assert cat["c"][0] == 0
    stats = store.sql("SELECT max FROM stats WHERE field = 'item.continuous.price'")
    assert stats["max"][0] == 1.5


def test_tensors_match_the_tables(built) -> None:
    store = Store(built[1])
    users = load_file(str(built[1] / "tensors" / "users.safetensors"))
    items = load_file(str(built[1] / "tensors" / "items.safetensors"))
    n_users = store.sql("SELECT count(*) AS n FROM users")["n"][0]
    assert users["categorical.occupation"].shape == (n_users + 1,)
    occupation = users["categorical.occupation"]
    assert occupation[0] == 0 and occupation[1:].min() > 0
    feats = store.sql('SELECT "categorical.tags" AS t FROM item_features ORDER BY item_index')
    assert np.array_equal(items["categorical.tags"][1:], np.array(feats["t"].to_list()))
    assert items["categorical.tags"].shape[1] == 8
    text = load_file(str(built[1] / "tensors" / "text_embeddings.safetensors"))["embedding"]
    assert text.shape[1] == 384 and not text[0].any()
    assert np.allclose(np.linalg.norm(text[1:], axis=1), 1.0, atol=1e-4)
    image = load_file(str(built[1] / "tensors" / "image_embeddings.safetensors"))["embedding"]
    assert image.shape == (61, 1280) and not image[0].any()
    assert items["image.main_image.missing"][1:].sum() == 0
    assert np.isclose(items["popularity"].sum(), store.sql(
        "SELECT sum(weight) AS w FROM samples WHERE split = 'train'")["w"][0], rtol=1e-4)
    for feature in store.manifest["features"]:
        side = users if feature["side"] == "user" else items
        for out in feature["outputs"]:
            assert list(side[out["column"]].shape[1:]) == out["shape"]


def test_shards_read_back_to_the_samples_table(built) -> None:
    store = Store(built[1])
    for split in ("train", "val"):
        paths = sorted((built[1] / "shards").glob(f"{split}-*.tar"))
        assert [p.name for p in paths] == store.manifest["shards"][split]["files"]
        assert store.manifest["shards"][split]["n_samples"] == sum(
            len(b["item"]) for b in read_blocks(paths))
        blocks = list(read_blocks(paths))
        got = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
        table = store.sql(f"SELECT * FROM samples WHERE split = '{split}' ORDER BY position")
        order = np.argsort(got["position"])
        assert np.array_equal(got["position"][order], table["position"].to_numpy())
        assert np.array_equal(got["item"][order], table["item_index"].to_numpy())
        assert np.array_equal(got["hend"][order], table["history_end"].to_numpy())
        assert np.array_equal(got["hlen"][order], table["history_length"].to_numpy())
        assert np.allclose(got["weight"][order], table["weight"].to_numpy())


def test_second_featurize_embeds_nothing_and_new_text_only_once(built, tmp_path) -> None:
    root, store = built
    doc = json.loads((root / "data.json").read_text())
    again = invoke("featurize", root / "data.json", "--store", store)
    assert again.exit_code == 0, again.output
    report = Store(store).report["embeddings"]
    assert report["text"]["model_calls"] == 0 and report["text"]["embedded"] == 0
    assert report["image"]["model_calls"] == 0 and report["image"]["embedded"] == 0
    doc["item_data"][0]["text"]["title"] = "a brand new title nobody has seen"
    doc["item_data"][1]["text"]["title"] = "another unseen title"
    (root / "changed.json").write_text(json.dumps(doc))
    changed = invoke("featurize", root / "changed.json", "--store", store)
    assert changed.exit_code == 0, changed.output
    assert Store(store).report["embeddings"]["text"]["embedded"] == 2


def test_unreadable_images_are_counted(tmp_path) -> None:
    data = synthesize(30, 12, 300, seed=1, images_dir=tmp_path / "images")
    (tmp_path / "images" / "i1.png").write_bytes(b"not a png")
    (tmp_path / "images" / "i2.png").unlink()
    write_document(data, tmp_path / "d.json")
    result = invoke("featurize", tmp_path / "d.json", "--store", tmp_path / "s")
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "s")
    assert store.report["embeddings"]["image"]["unreadable"] == 2
    flags = store.sql('SELECT item_id, "image.main_image.missing" AS m FROM item_features '
                      "WHERE m = 1 ORDER BY item_id")
    assert flags["item_id"].to_list() == [1, 2]
    assert "unreadable images" in result.stderr


def test_folder_forms_compile_to_identical_stores(tmp_path) -> None:
    data = synthesize(40, 20, 600, seed=2)
    write_document(data, tmp_path / "d.json")
    stores = {"document": tmp_path / "d.json"}
    for fmt in ("jsonl", "parquet"):
        write_folder(data, tmp_path / fmt, fmt=fmt)
        stores[fmt] = tmp_path / fmt
    manifests, tables = {}, {}
    for name, src in stores.items():
        assert invoke("featurize", src, "--store", tmp_path / f"s-{name}").exit_code == 0
        store = Store(tmp_path / f"s-{name}")
        manifests[name] = {k: v for k, v in store.manifest.items() if k != "input"}
        tables[name] = {t: store.sql(f"SELECT * FROM {t} ORDER BY ALL") for t in (
            "users", "items", "interactions", "vocab", "stats", "user_features",
            "item_features", "samples", "text_embeddings")}
    for name in ("jsonl", "parquet"):
        assert manifests[name] == manifests["document"], name
        for t, frame in tables[name].items():
            assert frame.equals(tables["document"][t]), (name, t)


def test_plan_prints_without_writing(tmp_path, built) -> None:
    result = invoke("featurize", built[0] / "data.json", "--store", tmp_path / "none", "--plan")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "none").exists()
    for text in ("categorify", "normalize", "id_sequence", "float_sequence", "text_embedding",
                 "image_embedding", "categorical.tags", "split: strategy=user-time"):
        assert text in result.stdout
    vocab = Store(built[1]).sql("SELECT count(*) + 1 AS n FROM vocab WHERE "
                                "field = 'item.categorical.category'")["n"][0]
    row = next(line for line in result.stdout.splitlines() if "categorical.category" in line)
    assert f" {vocab} " in row


def test_field_overrides_and_unknown_fields(tmp_path, built) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"features": {"fields": {
        "item.categorical.tags": {"max_len": 2}, "user.continuous.income": {"enabled": False},
        "item.continuous.price": {"transform": "log1p"}}}}))
    result = invoke("featurize", built[0] / "data.json", "--store", tmp_path / "s",
                    "--config", cfg)
    assert result.exit_code == 0, result.output
    m = Store(tmp_path / "s").manifest
    names = {f["name"]: f for f in m["features"] if f["side"] == "item"}
    assert names["categorical.tags"]["outputs"][0]["shape"] == [2]
    assert names["continuous.price"]["params"]["transform"] == "log1p"
    assert "continuous.income" not in {f["name"] for f in m["features"] if f["side"] == "user"}
    cfg.write_text(json.dumps({"features": {"fields": {"item.categorical.tag": {}}}}))
    bad = invoke("featurize", built[0] / "data.json", "--store", tmp_path / "s2", "--config", cfg)
    assert bad.exit_code == 1
    assert "did you mean 'item.categorical.tags'" in bad.stderr


def test_statistics_do_not_depend_on_record_order(tmp_path) -> None:
    """The same records in another order give bit-identical statistics and scaled values.

    A plain ``avg``/``stddev_pop`` sums in scan order (and, on large tables, in whatever
    order DuckDB's threads finish), so its last digits move with the order of the input."""
    rng = np.random.default_rng(7)
    n = 400
    ages = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 7, n)
    users = [{"user_id": u, "continuous": {"age": float(ages[u])}} for u in range(n)]
    items = [{"item_id": 1000 + i, "continuous": {"price": float(rng.lognormal(3, 2))},
              "temporal": {"ph": [float(x) for x in rng.standard_normal(3) * 1e3]}}
             for i in range(60)]
    inter = [{"user_id": u, "item_id": 1000 + int(i), "timestamp": 1_700_000_000 + t}
             for u in range(n) for t, i in enumerate(rng.choice(60, 3, replace=False))]
    stores = []
    for name, order in (("forward", 1), ("backward", -1)):
        doc = {"user_data": users[::order], "item_data": items[::order], "interactions": inter}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        result = invoke("featurize", path, "--store", tmp_path / name, "--split", "none")
        assert result.exit_code == 0, result.output
        stores.append(Store(tmp_path / name))
    stats = [s.sql("SELECT * FROM stats ORDER BY field").rows() for s in stores]
    assert [r[0] for r in stats[0]] == ["item.continuous.price", "item.temporal.ph",
                                        "user.continuous.age"]
    assert stats[0] == stats[1]  # exact: the same bits
    scaled = 'SELECT user_id, "continuous.age" FROM user_features ORDER BY user_id'
    assert stores[0].sql(scaled).rows() == stores[1].sql(scaled).rows()
    age = next(r for r in stats[0] if r[0] == "user.continuous.age")
    assert age[2] == pytest.approx(float(np.mean(ages)), rel=1e-12)
    assert age[3] == pytest.approx(float(np.std(ages)), rel=1e-12)
