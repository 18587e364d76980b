"""Malformed documents: exit 1, one located line, no traceback, previous store intact."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BASE_DOC, invoke, tree_digest, write_doc

Mutation = Callable[[dict], "dict | str | None"]


def _set(path: str, value) -> Mutation:
    """Mutation setting doc[a][b]... = value (ints index lists)."""

    def apply(doc: dict) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = doc
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return apply


def _del(path: str) -> Mutation:
    def apply(doc: dict) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split("/")]
        node = doc
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return apply


def _raw(text: str) -> Mutation:
    return lambda doc: text


def _rename_section(old: str, new: str) -> Mutation:
    def apply(doc: dict) -> None:
        doc[new] = doc.pop(old)

    return apply


def _nan_age(doc: dict) -> str:
    import json

    doc["user_data"][0]["continuous"]["age"] = float("nan")
    return json.dumps(doc)  # Python writes the non-standard literal NaN


# (case id, mutation, fragments the one-line message must contain)
CASES: list[tuple[str, Mutation, tuple[str, ...]]] = [
    ("not-json", _raw('{"user_data": [ {"user_id": 1,'), ("not valid JSON",)),
    ("empty-file", _raw(""), ("the document is empty",)),
    ("top-level-array", _raw("[1, 2]"), ("starts with '['",)),
    ("two-values", _raw('{"user_data": []} {"user_data": []}'), ("holds 2 JSON values",)),
    ("missing-section", _del("user_data"), ("missing section 'user_data'",)),
    ("misspelled-section", _rename_section("item_data", "item_dat"),
     ("missing section 'item_data'", "did you mean 'item_dat'")),
    ("section-object", _set("user_data", {"user_id": 1}),
     ("user_data: must be a list of records, got an object",)),
    ("section-string", _set("interactions", "none"), ("interactions: must be a list",)),
    ("record-scalar", _set("user_data/1", 5),
     ("user_data[1]", "each record must be an object, got an integer")),
    ("record-null", _set("interactions/2", None), ("interactions[2]", "got null")),
    ("user-id-missing", _del("user_data/2/user_id"), ("user_data[2]", "user_id", "missing")),
    ("user-id-null", _set("user_data/1/user_id", None), ("user_data[1]", "user_id", "missing")),
    ("user-id-float", _set("user_data/0/user_id", 1.5),
     ("user_data[0]", "user_id", "integer or a string", "1.5")),
    ("item-id-empty", _set("item_data/1/item_id", "  "), ("item_data[1]", "item_id", "empty")),
    ("item-id-bool", _set("item_data/0/item_id", True), ("item_data[0]", "got a boolean")),
    ("item-id-mixed", _set("item_data/2/item_id", "12"),
     ("item_data[2]", "item_id", "a string here but a number in item_data[0]")),
    ("user-id-duplicate", _set("user_data/2/user_id", 1),
     ("user_data[2]", "duplicate user_id", "user_data[0] has it too", "--on-duplicate-id")),
    ("unknown-record-key", _set("user_data/1/categorcal", {"a": "b"}),
     ("user_data[1]", "unknown key 'categorcal'", "did you mean 'categorical'")),
    ("group-not-object", _set("item_data/0/continuous", [1, 2]),
     ("item_data[0]", "continuous", "must be an object")),
    ("empty-field-name", _set("user_data/0/categorical/", "x"),
     ("user_data[0]", "field names must not be empty")),
    ("continuous-string", _set("user_data/0/continuous/age", "30"),
     ("user_data[0] (user_id '1'): continuous.age: must be a number, got a string ('30')",)),
    ("continuous-nan", _nan_age, ("user_data[0]", "continuous.age", "NaN")),
    ("continuous-inf", _raw('{"user_data": [{"user_id": 1, "continuous": {"age": 1e999}}], '
                            '"item_data": [{"item_id": 1}], '
                            '"interactions": [{"user_id": 1, "item_id": 1}]}'),
     ("user_data[0]", "continuous.age", "infinity")),
    ("continuous-list", _set("item_data/0/continuous/price", [1.0]),
     ("item_data[0]", "continuous.price", "got a list")),
    ("text-number", _set("user_data/0/text/bio", 42),
     ("user_data[0]", "text.bio", "must be a string, got an integer")),
    ("image-number", _set("user_data/0/image/pic", 7), ("image.pic", "must be a path")),
    ("image-empty", _set("user_data/0/image/pic", ""), ("image.pic", "empty path")),
    ("temporal-scalar", _set("user_data/0/temporal/prev", 10),
     ("temporal.prev", "must be a list")),
    ("temporal-mixed", _set("user_data/0/temporal/prev", [10, "eleven"]),
     ("temporal.prev", "mixes numbers and strings")),
    ("temporal-nested", _set("item_data/0/temporal/ph", [[1.0]]),
     ("item_data[0]", "temporal.ph", "got a list")),
    ("temporal-null-element", _set("item_data/0/temporal/ph", [1.0, None]),
     ("temporal.ph", "got null")),
    ("categorical-object", _set("user_data/0/categorical/country", {"iso": "US"}),
     ("user_data[0]", "categorical.country", "got an object")),
    ("categorical-mixed", _set("user_data/1/categorical/country", 33),
     ("user_data[1]", "categorical.country", "a string in user_data[0]")),
    ("categorical-nested", _set("user_data/0/categorical/genres", [["drama"]]),
     ("categorical.genres", "list elements must be strings")),
    ("interaction-unknown-key", _set("interactions/0/usr_id", 1),
     ("interactions[0]", "unknown key 'usr_id'", "did you mean 'user_id'")),
    ("interaction-unknown-user", _set("interactions/1/user_id", 99),
     ("interactions[1]: user_id '99' is not in user_data", "--on-unknown-user=drop")),
    ("interaction-unknown-item", _set("interactions/2/item_id", "B07X"),
     ("interactions[2]: item_id 'B07X' is not in item_data", "--on-unknown-item=drop")),
    ("interaction-missing-item", _del("interactions/0/item_id"),
     ("interactions[0]", "item_id", "missing")),
    ("timestamp-unparseable", _set("interactions/1/timestamp", "yesterday"),
     ("interactions[1]", "timestamp", "'yesterday'", "ISO-8601")),
    ("timestamp-milliseconds", _set("interactions/1/timestamp", 1700000000000),
     ("interactions[1]", "timestamp", "milliseconds")),
    ("timestamp-partial", _del("interactions/2/timestamp"),
     ("interactions[2]", "timestamp", "missing while other interactions have one")),
    ("timestamp-bool", _set("interactions/0/timestamp", False),
     ("interactions[0]", "timestamp", "got a boolean")),
    ("weight-negative", _set("interactions/0/weight", -1),
     ("interactions[0]", "weight", "zero or positive")),
    ("weight-string", _set("interactions/0/weight", "heavy"), ("weight", "must be a number")),
    ("rating-list", _set("interactions/2/rating", [4]), ("rating", "got a list")),
    ("type-number", _set("interactions/0/interaction_type", 3),
     ("interaction_type", "must be a string")),
    ("type-empty", _set("interactions/0/interaction_type", ""), ("interaction_type", "empty")),
    ("no-interactions", _set("interactions", []), ("no interactions",)),
]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("good")
    store = root / "store"
    result = invoke("featurize", write_doc(root / "good.json", copy.deepcopy(BASE_DOC)),
                    "--store", store)
    assert result.exit_code == 0, result.output
    return store, tree_digest(store)


def test_at_least_thirty_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case_id,mutate,fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_document(tmp_path, good_store, case_id, mutate, fragments) -> None:
    store, before = good_store
    doc = copy.deepcopy(BASE_DOC)
    out = mutate(doc)
    path = write_doc(tmp_path / "bad.json", out if isinstance(out, str) else doc)
    result = invoke("featurize", path, "--store", store)
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert tree_digest(store) == before, "a failed featurize changed the previous store"
    leftovers = [p.name for p in store.parent.iterdir() if ".building-" in p.name]
    assert leftovers == []
