"""No input is silently changed: what another reader would take differently, or what would
quietly reshape a feature, is a one-line error naming section, record and field."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import invoke, tree_digest, write_doc


def _mutate(doc: dict, how: str) -> dict | str:
    if how == "duplicate key":
        text = json.dumps(doc)
        return text.replace('{"user_id": 2,', '{"user_id": 2, "user_id": 999,', 1)
    if how == "duplicate group key":
        text = json.dumps(doc)
        return text.replace('"continuous": {"age": 41}', '"continuous": {"age": 41, "age": 5}')
    if how == "suffix collision":
        doc["item_data"][1]["continuous"] = {"price.missing": 1.0}
    elif how == "case collision":
        doc["user_data"][2]["continuous"] = {"Age": 3.0}
    elif how == "mixed temporal ids":
        doc["user_data"][1]["temporal"] = {"prev": [10, 999]}
    elif how in ("infinity", "-infinity", "epoch", "now"):
        doc["interactions"][1]["timestamp"] = how
    elif how == "whitespace id":
        doc["item_data"] = [{**r, "item_id": str(r["item_id"])} for r in doc["item_data"]]
        doc["item_data"][1]["item_id"] = " 11"
    elif how == "whitespace interaction id":
        doc["interactions"][0]["user_id"] = "1 "
    elif how == "huge continuous":
        doc["user_data"][1]["continuous"]["age"] = 1e200
    elif how == "1000 fields":
        doc["user_data"][0]["continuous"] = {f"f{i}": 1.0 for i in range(1000)}
    return doc


CASES = [
    ("duplicate key", "user_data[1]: user_id: key 'user_id' appears twice"),
    ("duplicate group key", "user_data[1]: continuous.age: key 'age' appears twice"),
    ("suffix collision", "item_data[1]: continuous.price.missing: collides with the '.missing'"),
    ("case collision", "user_data[2]: continuous.Age: differs from 'age' only in case"),
    ("mixed temporal ids", "user_data[1] (user_id 2): temporal.prev: holds 999, not an item id"),
    ("infinity", "interactions[1]: timestamp: is 'infinity', which is not ISO-8601"),
    ("-infinity", "interactions[1]: timestamp: is '-infinity', which is not ISO-8601"),
    ("epoch", "interactions[1]: timestamp: is 'epoch', which is not ISO-8601"),
    ("now", "interactions[1]: timestamp: is 'now', which is not ISO-8601"),
    ("whitespace id", "item_data[1] (item_id ' 11'): item_id: is ' 11': ids must not"),
    ("whitespace interaction id", "interactions[0]: user_id: is '1 ': ids must not start"),
    ("huge continuous", "user_data[1] (user_id '2'): continuous.age: is '1e200': continuous"),
    ("1000 fields", "user_data: 1006 fields; at most 256"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import BASE_DOC

    root = tmp_path_factory.mktemp("silent")
    result = invoke("featurize", write_doc(root / "ok.json", copy.deepcopy(BASE_DOC)),
                    "--store", root / "store")
    assert result.exit_code == 0, result.output
    return root / "store"


@pytest.mark.parametrize("how, message", CASES, ids=[c[0] for c in CASES])
def test_one_located_line_and_the_old_store_kept(tmp_path, store, doc, how, message) -> None:
    before = tree_digest(store)
    result = invoke("featurize", write_doc(tmp_path / "bad.json", _mutate(doc, how)),
                    "--store", store)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: " + message), result.stderr
    assert tree_digest(store) == before
