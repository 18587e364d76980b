"""Hypothesis breaks documents at random: featurize either succeeds or raises DataError."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from conftest import BASE_DOC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirec import DataError, Store, featurize

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["", " ", "2024-01-01", "1", "user_id", 'q"uote', "1e999"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
keys = st.one_of(st.sampled_from(["user_id", "item_id", "categorical", "continuous", "text",
                                  "image", "temporal", "timestamp", "weight", "rating",
                                  "interaction_type", "age", "genres", "x"]), st.text(max_size=5))


def _containers(node, out):
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            _containers(v, out)
    elif isinstance(node, list):
        out.append(node)
        for v in node:
            _containers(v, out)
    return out


@st.composite
def broken_documents(draw):
    doc = copy.deepcopy(BASE_DOC)
    for _ in range(draw(st.integers(1, 3))):
        nodes = _containers(doc, [])
        node = draw(st.sampled_from(nodes))
        action = draw(st.sampled_from(["set", "delete", "append"]))
        if isinstance(node, dict):
            if action == "delete" and node:
                del node[draw(st.sampled_from(sorted(node)))]
            else:
                key = draw(st.one_of(st.sampled_from(sorted(node) or ["x"]), keys))
                node[key] = draw(values)
        elif action == "delete" and node:
            node.pop(draw(st.integers(0, len(node) - 1)))
        elif action == "append" or not node:
            node.append(draw(values))
        else:
            node[draw(st.integers(0, len(node) - 1))] = draw(values)
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_documents())
def test_broken_documents_fail_cleanly(doc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.json"
        path.write_text(json.dumps(doc))  # Python writes NaN/Infinity literals, as users' do
        try:
            featurize(path, Path(tmp) / "store")
        except DataError as err:
            text = str(err)
            assert text and "\n" not in text and "Traceback" not in text
        else:
            counts = Store(Path(tmp) / "store").counts()
            assert counts["interactions"] >= 1


def test_a_field_name_with_a_newline_still_gives_a_one_line_error(tmp_path) -> None:
    """Found by the fuzzer: the field name went into the message verbatim."""
    doc = copy.deepcopy(BASE_DOC)
    doc["user_data"][0]["continuous"]["0\n"] = []
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    try:
        featurize(path, tmp_path / "store")
    except DataError as err:
        assert "\n" not in str(err) and "continuous.0\\n" in str(err), str(err)
    else:
        raise AssertionError("a list in a continuous field must be refused")


def test_a_section_whose_keys_cut_duckdbs_message_mid_character_is_located(tmp_path) -> None:
    """Found by the fuzzer: DuckDB cut its error message inside a two-byte character (U+0080
    in a key) and its binding raised UnicodeDecodeError, a traceback instead of a line."""
    doc = copy.deepcopy(BASE_DOC)
    doc["interactions"] = {"": None, "0\x1f\x1f\x80": None, "00\x1f\x1f\x80\x80": None}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    try:
        featurize(path, tmp_path / "store")
    except DataError as err:
        assert str(err) == "interactions: must be a list of records, got an object", str(err)
    else:
        raise AssertionError("an object in place of the interactions list must be refused")


def test_a_jsonl_line_that_cuts_duckdbs_message_mid_character_is_located(tmp_path) -> None:
    """The same cut on the folder path: a line that is not JSON and holds U+0080 made the
    message of DuckDB's JSON parser undecodable (json_problem), a traceback again."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "users.jsonl").write_text('{"user_id": 1}\n')
    (folder / "items.jsonl").write_text('{"item_id": 1}\n')
    (folder / "interactions.jsonl").write_text(
        '{"user_id": 1, "item_id": 1}\n' + "\x80" * 300 + "\n", encoding="utf-8")
    try:
        featurize(folder, tmp_path / "store")
    except DataError as err:
        assert str(err) == ("interactions[1]: interactions.jsonl could not be read: not valid "
                            "JSON (unexpected character at byte 0)"), str(err)
    else:
        raise AssertionError("a line that is not JSON must be refused")
