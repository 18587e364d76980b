"""The interactions table in one query when nothing is dropped, the full path otherwise.

``raw._nothing_dropped`` writes ``interactions`` through inner joins and keeps it only when
every input row is there with a timestamp. These tests run each input twice, once as
featurize runs it and once with that shortcut switched off, and ask for the same typed
table (values, order and column types) and the same report; inputs that drop rows or have
no timestamps must take the full path, and its counts must be the report's.
"""

from __future__ import annotations

import copy
import json

import pytest
from conftest import BASE_DOC, invoke, write_doc

from unirec.featurize import raw
from unirec.store import Store


def _table(store) -> tuple[list, list]:
    with Store(store).connect() as con:
        rows = con.execute("SELECT * FROM interactions ORDER BY position").fetchall()
        types = con.execute("DESCRIBE interactions").fetchall()
    return rows, types


def _dropped(store) -> dict:
    report = json.loads((store / "report.json").read_text())
    return report["sections"]["interactions"]["dropped"]


def _both_ways(tmp_path, monkeypatch, doc: dict, *flags: str) -> list[bool]:
    """Featurize ``doc`` as featurize does, then with the shortcut off; return what the
    shortcut answered in the first run after checking that both stores agree."""
    answers: list[bool] = []
    real = raw._nothing_dropped

    def spy(*args):
        answers.append(real(*args))
        return answers[-1]

    path = write_doc(tmp_path / "doc.json", doc)
    monkeypatch.setattr(raw, "_nothing_dropped", spy)
    fast = invoke("featurize", path, "--store", tmp_path / "fast", *flags)
    assert fast.exit_code == 0, fast.output
    monkeypatch.setattr(raw, "_nothing_dropped", lambda *args: False)
    full = invoke("featurize", path, "--store", tmp_path / "full", *flags)
    assert full.exit_code == 0, full.output
    assert _table(tmp_path / "fast") == _table(tmp_path / "full")
    assert _dropped(tmp_path / "fast") == _dropped(tmp_path / "full")
    return answers


def test_a_clean_input_is_written_in_one_query(tmp_path, monkeypatch) -> None:
    doc = copy.deepcopy(BASE_DOC)
    doc["interactions"].append({"user_id": 1, "item_id": 12, "weight": 0.0, "rating": 2.5,
                                "timestamp": "2024-03-01T10:00:00+02:00"})
    assert _both_ways(tmp_path, monkeypatch, doc) == [True]
    rows, _ = _table(tmp_path / "fast")
    assert len(rows) == 4 and _dropped(tmp_path / "fast") == {}


def test_text_ids_take_the_shortcut_too(tmp_path, monkeypatch) -> None:
    doc = {"user_data": [{"user_id": "a"}, {"user_id": "7"}],
           "item_data": [{"item_id": "x"}, {"item_id": "7"}],
           "interactions": [{"user_id": "a", "item_id": "x", "timestamp": 3},
                            {"user_id": "7", "item_id": "7", "timestamp": 3},
                            {"user_id": "7", "item_id": "x", "timestamp": 1}]}
    assert _both_ways(tmp_path, monkeypatch, doc) == [True]
    rows, _ = _table(tmp_path / "fast")
    assert [(r[1], r[2]) for r in rows] == [("a", "x"), ("7", "7"), ("7", "x")]


DROPS = {
    "unknown user": ({"user_id": 9, "item_id": 10, "timestamp": 5}, {"unknown_user": 1}),
    "unknown item": ({"user_id": 1, "item_id": 99, "timestamp": 5}, {"unknown_item": 1}),
    "missing timestamp": ({"user_id": 1, "item_id": 11}, {"bad_timestamp": 1}),
    "bad timestamp": ({"user_id": 2, "item_id": 10, "timestamp": "soon"}, {"bad_timestamp": 1}),
}


@pytest.mark.parametrize("case", list(DROPS))
def test_a_dropped_row_takes_the_full_path_and_is_counted(tmp_path, monkeypatch,
                                                           case) -> None:
    record, dropped = DROPS[case]
    doc = copy.deepcopy(BASE_DOC)
    doc["interactions"].insert(1, record)
    flags = ("--on-unknown-user", "drop", "--on-unknown-item", "drop",
             "--on-bad-timestamp", "drop")
    assert _both_ways(tmp_path, monkeypatch, doc, *flags) == [False]
    assert _dropped(tmp_path / "fast") == dropped
    rows, _ = _table(tmp_path / "fast")
    assert [r[0] for r in rows] == [0, 2, 3]  # input positions, the dropped one gone


def test_an_input_without_timestamps_takes_the_full_path(tmp_path, monkeypatch) -> None:
    doc = copy.deepcopy(BASE_DOC)
    for record in doc["interactions"]:
        del record["timestamp"]
    assert _both_ways(tmp_path, monkeypatch, doc, "--split", "none") == [False]
    rows, _ = _table(tmp_path / "fast")
    assert len(rows) == 3 and all(r[4] is None for r in rows)


def test_an_unknown_id_is_still_a_located_error(tmp_path) -> None:
    doc = copy.deepcopy(BASE_DOC)
    doc["interactions"].append({"user_id": 1, "item_id": 99, "timestamp": 5})
    result = invoke("featurize", write_doc(tmp_path / "doc.json", doc),
                    "--store", tmp_path / "store")
    assert result.exit_code != 0
    assert result.output.startswith("Error: interactions[3]: item_id '99' is not in "
                                    "item_data (interactions naming unknown items: 1;")
    assert not (tmp_path / "store").exists()
