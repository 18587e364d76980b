"""The bucketize op end to end: chosen in the config, featurized, trained on, served."""

from __future__ import annotations

import json

from conftest import invoke, write_doc

from unirec import Store


def test_bucketized_field_through_featurize_fit_and_recommend(tmp_path, doc) -> None:
    doc["item_data"][1]["continuous"] = {"price": 7.0}
    doc["item_data"][2]["continuous"] = {"price": 40.0}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"features": {"fields": {
        "item.continuous.price": {"op": "bucketize", "buckets": 2}}}}))
    data = write_doc(tmp_path / "data.json", doc)
    store = tmp_path / "store"
    out = invoke("featurize", data, "--store", store, "--config", cfg, "--split", "none")
    assert out.exit_code == 0, out.output
    (feat,) = [f for f in Store(store).manifest["features"] if f["name"] == "continuous.price"]
    assert feat["op"] == "bucketize" and feat["edges"] == [7.0] and feat["vocab_size"] == 3
    got = Store(store).sql('SELECT m.item_id, i."continuous.price" AS b FROM item_features i '
                           "JOIN item_map m USING (item_index) ORDER BY m.item_id")
    assert got["b"].to_list() == [1, 2, 2]  # 1.5 < 7 <= 7 <= 40
    fit = invoke("fit", "--store", store, "--epochs", "1")
    assert fit.exit_code == 0, fit.output
    rec = invoke("recommend", "--store", store, "--user", "1", "--format", "json",
                 "--include-seen")
    assert rec.exit_code == 0, rec.output
