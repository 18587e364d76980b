"""schemas/dataset.schema.json: valid itself, accepts the documented examples, rejects bad input."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "dataset.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)

# The example of SEED-README.md (the README of the system unirec replaces), extended with
# the optional interaction fields.
SEED_EXAMPLE = {
    "user_data": [
        {
            "user_id": 1,
            "image": {"profile_pic": "/path/to/image.jpg"},
            "text": {"bio": "User description", "summary": "Short summary"},
            "categorical": {"country": "USA", "gender": "male"},
            "continuous": {"age": 25.0, "income": 50000.0},
            "temporal": {"prev_interactions": [1, 2, 3], "session_times": [5, 10, 15]},
        }
    ],
    "item_data": [
        {
            "item_id": 101,
            "image": {"main_image": "/path/to/item.jpg"},
            "text": {"title": "Product Name", "description": "Product description"},
            "categorical": {"category": "electronics", "brand": "BrandName"},
            "continuous": {"price": 99.99, "rating": 4.5},
            "temporal": {"price_history": [99.99, 89.99], "view_counts": [10, 20, 30]},
        }
    ],
    "interactions": [
        {"user_id": 1, "item_id": 101, "interaction_type": "purchase",
         "timestamp": "2024-01-15T10:30:00"},
        {"user_id": 1, "item_id": 101, "interaction_type": None, "timestamp": 1705314600,
         "weight": 2.5, "rating": 4},
    ],
}


def _readme_example() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## The input document")
    section = text[start:]
    nxt = re.search(r"^## ", section[3:], flags=re.MULTILINE)
    if nxt:
        section = section[: nxt.start() + 3]
    block = re.search(r"```json\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README's 'The input document' section has no ```json block"
    return json.loads(block.group(1))


def _errors(doc: object) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(doc)]


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://unirec.dev/schemas/dataset.schema.json"
    assert SCHEMA["title"]


def test_every_property_is_described():
    missing = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if not sub.get("description"):
                    missing.append(f"{where}/properties/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(SCHEMA, "#")
    assert not missing, missing


def test_readme_example_validates():
    assert _errors(_readme_example()) == []


def test_seed_readme_example_validates():
    assert _errors(SEED_EXAMPLE) == []


def test_minimal_and_permissive_documents_validate():
    doc = {
        "user_data": [{"user_id": "u-1", "categorical": None, "text": {"bio": None}}],
        "item_data": [{"item_id": "B07X",
                       "categorical": {"genres": ["drama", "crime"], "adult": False,
                                       "year": 1994, "missing": None}}],
        "interactions": [],
        "metadata": {"source": "export", "version": 3},  # unknown top-level keys: ignored
    }
    assert _errors(doc) == []


def _bad(path: tuple, value: object, *, delete: bool = False) -> dict:
    """SEED_EXAMPLE with the value at ``path`` replaced (or deleted)."""
    doc = copy.deepcopy(SEED_EXAMPLE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


INVALID = {
    "missing user_data": _bad(("user_data",), None, delete=True),
    "missing interactions": _bad(("interactions",), None, delete=True),
    "section not an array": _bad(("item_data",), {"101": {"item_id": 101}}),
    "document not an object": [SEED_EXAMPLE],
    "record not an object": _bad(("user_data", 0), 1),
    "user without id": _bad(("user_data", 0, "user_id"), None, delete=True),
    "interaction without item_id": _bad(("interactions", 0, "item_id"), None, delete=True),
    "float id": _bad(("item_data", 0, "item_id"), 1.5),
    "empty-string id": _bad(("user_data", 0, "user_id"), ""),
    "blank id": _bad(("interactions", 0, "user_id"), "   "),
    "null id": _bad(("item_data", 0, "item_id"), None),
    "boolean id": _bad(("user_data", 0, "user_id"), True),
    "unknown record key (typo)": _bad(("user_data", 0, "categorcal"), {"country": "US"}),
    "continuous as string": _bad(("user_data", 0, "continuous", "age"), "25"),
    "text as number": _bad(("item_data", 0, "text", "title"), 42),
    "temporal as scalar": _bad(("user_data", 0, "temporal", "session_times"), 5),
    "temporal mixing ids and floats": _bad(("item_data", 0, "temporal", "h"), ["a", 1.5]),
    "temporal with empty id": _bad(("user_data", 0, "temporal", "prev_interactions"), [""]),
    "nested list in categorical": _bad(("item_data", 0, "categorical", "tags"), [["a"]]),
    "object in categorical": _bad(("item_data", 0, "categorical", "brand"), {"n": "x"}),
    "empty image path": _bad(("item_data", 0, "image", "main_image"), ""),
    "empty field name": _bad(("item_data", 0, "continuous", ""), 1.0),
    "group not an object": _bad(("user_data", 0, "categorical"), ["US", "male"]),
    "negative weight": _bad(("interactions", 1, "weight"), -1),
    "rating as string": _bad(("interactions", 1, "rating"), "5"),
    "timestamp as boolean": _bad(("interactions", 0, "timestamp"), True),
    "empty interaction_type": _bad(("interactions", 0, "interaction_type"), ""),
    "interaction with unknown key": _bad(("interactions", 0, "quantity"), 2),
}


@pytest.mark.parametrize("doc", list(INVALID.values()), ids=list(INVALID))
def test_invalid_document_is_rejected(doc):
    assert _errors(doc), "expected the schema to reject this document"
