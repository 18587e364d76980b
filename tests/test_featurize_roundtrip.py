"""A valid document round-trips into users/items/interactions, whatever its form."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pytest
from conftest import invoke, write_doc

from unirec import Store, featurize
from unirec.config import load_config


def _store(tmp_path, doc, *extra: str) -> Store:
    result = invoke("featurize", write_doc(tmp_path / "doc.json", doc), "--store",
                    tmp_path / "store", *extra)
    assert result.exit_code == 0, result.output
    return Store(tmp_path / "store")


def test_counts_and_values_equal_the_input(tmp_path, doc) -> None:
    store = _store(tmp_path, doc)
    counts = store.counts()
    assert {t: counts[t] for t in ("users", "items", "interactions")} == {
        "users": 3, "items": 3, "interactions": 3}
    users = store.sql("SELECT user_id, categorical.country AS country, categorical.genres AS "
                      "genres, continuous.age AS age, text.bio AS bio, temporal.prev AS prev, "
                      "image.pic AS pic FROM users ORDER BY position")
    assert users["user_id"].to_list() == [1, 2, 3]
    assert users["country"].to_list() == ["US", "FR", None]
    # a scalar in a multi-valued field becomes a one-element list
    assert users["genres"].to_list() == [["drama", "comedy"], ["drama"], None]
    assert users["age"].to_list() == [30.0, 41.0, None]
    assert users["bio"].to_list() == ["likes long walks", None, None]
    assert users["prev"].to_list() == [[10, 11], None, None]
    assert users["pic"].to_list() == ["img/u1.png", None, None]
    items = store.sql("SELECT item_id, categorical.cat AS cat, continuous.price AS price, "
                      "text.title AS title, temporal.ph AS ph FROM items ORDER BY position")
    assert items.rows() == [(10, "x", 1.5, "The first item", [1.0, 2.5]),
                            (11, "y", None, None, None), (12, None, None, None, None)]
    inter = store.sql("SELECT * FROM interactions ORDER BY position")
    assert inter["user_id"].to_list() == [1, 2, 3]
    assert inter["item_id"].to_list() == [10, 11, 12]
    assert inter["interaction_type"].to_list() == ["view", None, None]
    assert inter["timestamp"].to_list() == [
        datetime(2024, 1, 1), datetime(2023, 11, 14, 22, 13, 20), datetime(2024, 2, 1)]
    assert inter["weight"].to_list() == [1.0, None, None]
    assert inter["rating"].to_list() == [None, None, 4.0]
    manifest = store.manifest
    assert manifest["counts"] == {"users": 3, "items": 3, "interactions": 3}
    assert manifest["tables"]["users"]["user_id"] == "BIGINT"
    assert len(manifest["input"]["sha256"]) == 64
    assert manifest["config_hash"] == load_config().hash()


def test_string_ids_timezones_and_odd_field_names(tmp_path, doc) -> None:
    doc["user_data"] = [{"user_id": "u-1", "categorical": {'we"ird name': "a"}},
                        {"user_id": "u-2"}]
    doc["item_data"] = [{"item_id": "B07X", "temporal": {"seen with": ["B08Y"]}},
                        {"item_id": "B08Y"}]
    doc["interactions"] = [
        {"user_id": "u-1", "item_id": "B07X", "timestamp": "2024-01-15T12:00:00+02:00"},
        {"user_id": "u-2", "item_id": "B08Y", "timestamp": "2024-01-15T10:00:00Z"},
    ]
    store = _store(tmp_path, doc)
    assert store.sql("SELECT user_id FROM users")["user_id"].to_list() == ["u-1", "u-2"]
    odd = store.sql('SELECT categorical."we""ird name" AS v FROM users ORDER BY position')
    assert odd["v"].to_list() == ["a", None]
    ts = store.sql("SELECT timestamp FROM interactions ORDER BY position")["timestamp"]
    assert ts.to_list() == [datetime(2024, 1, 15, 10), datetime(2024, 1, 15, 10)]
    seq = store.sql('SELECT temporal."seen with" AS s FROM items ORDER BY position')["s"]
    assert seq.to_list() == [["B08Y"], None]


def _write_folder(doc: dict, folder, fmt: str) -> None:
    folder.mkdir()
    for section, stem in (("user_data", "users"), ("item_data", "items"),
                          ("interactions", "interactions")):
        if fmt == "jsonl":
            text = "".join(json.dumps(r) + "\n" for r in doc[section])
            (folder / f"{stem}.jsonl").write_text(text)
        else:
            pl.DataFrame(doc[section]).write_parquet(folder / f"{stem}.parquet")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_folder_input_compiles_to_the_same_tables(tmp_path, doc, fmt) -> None:
    if fmt == "parquet":  # a Parquet column has one type
        for it in doc["interactions"]:
            it["timestamp"] = "2024-03-01T00:00:00"
        doc["user_data"][1]["categorical"]["genres"] = ["drama"]
    featurize(write_doc(tmp_path / "doc.json", doc), tmp_path / "a")
    _write_folder(doc, tmp_path / "folder", fmt)
    result = invoke("featurize", tmp_path / "folder", "--store", tmp_path / "b")
    assert result.exit_code == 0, result.output
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    for table in ("users", "items", "interactions"):
        assert a.schema(table).equals(b.schema(table)), table
        assert a.sql(f"SELECT * FROM {table} ORDER BY position").equals(
            b.sql(f"SELECT * FROM {table} ORDER BY position")), table
    assert a.manifest["tables"] == b.manifest["tables"]
    assert a.manifest["counts"] == b.manifest["counts"]
    assert b.report["input"]["form"] == "folder"


def test_folder_errors_name_the_missing_file(tmp_path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "users.jsonl").write_text('{"user_id": 1}\n')
    result = invoke("featurize", tmp_path / "f", "--store", tmp_path / "s")
    assert result.exit_code == 1
    assert "missing section 'item_data'" in result.stderr and "items.jsonl" in result.stderr


def test_jsonl_positions_are_line_numbers(tmp_path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "users.jsonl").write_text('{"user_id": 1}\n{"user_id": 2}\n')
    (tmp_path / "f" / "items.jsonl").write_text('{"item_id": 1}\n')
    lines = [{"user_id": 1, "item_id": 1}] * 5 + [{"user_id": 7, "item_id": 1}]
    (tmp_path / "f" / "interactions.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines))
    result = invoke("featurize", tmp_path / "f", "--store", tmp_path / "s")
    assert "interactions[5]: user_id '7' is not in user_data" in result.stderr


def test_drop_policies_count_every_dropped_row(tmp_path, doc) -> None:
    doc["interactions"] += [
        {"user_id": 99, "item_id": 10, "timestamp": 1700000000},
        {"user_id": 1, "item_id": 98, "timestamp": 1700000000},
        {"user_id": 1, "item_id": 97, "timestamp": 1700000000},
        {"user_id": 1, "item_id": 10, "timestamp": "not a time"},
    ]
    doc["user_data"].append({"user_id": 1, "continuous": {"age": 99.0}})
    doc["item_data"][1]["categorical"]["cat"] = ""
    store = _store(tmp_path, doc, "--on-unknown-user=drop", "--on-unknown-item", "drop",
                   "--set", "validate.on_bad_timestamp=drop", "--on-duplicate-id=first")
    report = store.report
    assert report["sections"]["interactions"] == {
        "seen": 7, "kept": 3,
        "dropped": {"unknown_user": 1, "unknown_item": 2, "bad_timestamp": 1}}
    assert report["sections"]["user_data"]["dropped"] == {"duplicate_id": 1}
    assert store.sql("SELECT continuous.age AS a FROM users WHERE user_id = 1")["a"][0] == 30.0
    assert report["warnings"][0] == {"section": "item_data", "field": "categorical.cat",
                                     "count": 1, "message": "empty strings treated as missing"}
    # BASE_DOC's one image path points nowhere: counted, never silently zeroed
    assert report["warnings"][1]["section"] == "images" and report["warnings"][1]["count"] == 1
    assert store.sql("SELECT categorical.cat AS c FROM items WHERE item_id = 11")["c"][0] is None


def test_empty_strings_can_be_errors(tmp_path, doc) -> None:
    doc["item_data"][1]["categorical"]["cat"] = ""
    path = write_doc(tmp_path / "d.json", doc)
    result = invoke("featurize", path, "--store", tmp_path / "s",
                    "--set", "validate.empty_string_is_missing=false")
    assert result.exit_code == 1
    assert "item_data[1] (item_id '11'): categorical.cat: is an empty string" in result.stderr
