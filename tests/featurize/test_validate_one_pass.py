"""Validation in one pass: on clean input every field rule of a section is evaluated in one
scan (no query per rule), and the one-pass path and the rule-by-rule path it falls back to
give the same typed tables and, on bad input, the same located line byte for byte."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import BASE_DOC, invoke, write_doc

from unirec.features import validate
from unirec.features.profile import Profile
from unirec.store import Store


def _spy(monkeypatch, owner, name: str) -> list[int]:
    """Count calls of ``owner.name`` while still running it."""
    calls: list[int] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _rule_by_rule(monkeypatch) -> None:
    """Force the fallback: every rule runs its own query and raises in rule order."""
    monkeypatch.setattr(validate, "in_one_pass", lambda *args: None)


def test_a_clean_input_is_checked_in_one_scan_per_section(tmp_path, monkeypatch) -> None:
    firsts = _spy(monkeypatch, Profile, "first")
    batches = _spy(monkeypatch, Profile, "run_deferred")
    record_rules = _spy(monkeypatch, validate, "record_keys")
    doc = write_doc(tmp_path / "doc.json", copy.deepcopy(BASE_DOC))
    result = invoke("featurize", doc, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.output
    assert firsts == [], "a rule queried the records on its own"
    assert len(batches) == 3  # users, items, interactions: one batch of checks each
    assert record_rules == []  # every section's record rules ride on its profile scan


def _tables(store) -> dict[str, list]:
    with Store(store).connect() as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY position").fetchall()
                for t in ("users", "items", "interactions")}


def test_both_paths_build_the_same_typed_tables(tmp_path, monkeypatch) -> None:
    doc = copy.deepcopy(BASE_DOC)
    doc["interactions"].append({"user_id": 1, "item_id": 12, "weight": 0.0, "rating": 2.5,
                                "timestamp": "2024-03-01T10:00:00+02:00"})
    path = write_doc(tmp_path / "doc.json", doc)
    assert invoke("featurize", path, "--store", tmp_path / "fast").exit_code == 0
    _rule_by_rule(monkeypatch)
    assert invoke("featurize", path, "--store", tmp_path / "slow").exit_code == 0
    fast, slow = _tables(tmp_path / "fast"), _tables(tmp_path / "slow")
    assert fast == slow
    assert len(fast["interactions"]) == 4


def _raw(interactions: str) -> str:
    return ('{"user_data": [{"user_id": 1}, {"user_id": 2}], "item_data": [{"item_id": 1}], '
            f'"interactions": {interactions}}}')


# Several problems at once: the first rule in rule order (not in record order) must win.
BAD = {
    "unknown key + missing id": '[{"user_id": 1, "item_id": 1}, {"usr": 1, "item_id": 1}, '
                                '{"item_id": 1}]',
    "key twice": '[{"user_id": 1, "item_id": 1, "item_id": 1}]',
    "key in other case": '[{"User_id": 1, "item_id": 1}]',
    "record a list": '[{"user_id": 1, "item_id": 1}, [1, 2]]',
    "negative weight + numeric type": '[{"user_id": 1, "item_id": 1}, {"user_id": 1, '
                                      '"item_id": 1, "interaction_type": 5}, {"user_id": 1, '
                                      '"item_id": 1, "weight": -3}]',
    "float id + missing item": '[{"user_id": 1, "item_id": 1}, {"user_id": 1}, '
                               '{"user_id": 1.5, "item_id": 1}]',
    "empty id + untrimmed id": '[{"user_id": 1, "item_id": 1}, {"user_id": 1, "item_id": ""}, '
                               '{"user_id": 1, "item_id": " 1"}]',
    "unknown user + unknown item": '[{"user_id": 1, "item_id": 9}, {"user_id": 7, "item_id": 1}]',
    "bad time + unknown item": '[{"user_id": 1, "item_id": 1, "timestamp": "zz"}, '
                               '{"user_id": 1, "item_id": 9, "timestamp": 1}]',
    "time partly missing": '[{"user_id": 1, "item_id": 1, "timestamp": 1}, '
                           '{"user_id": 2, "item_id": 1}]',
    "NaN rating": '[{"user_id": 1, "item_id": 1, "rating": NaN}]',
    "huge id": '[{"user_id": 1e400, "item_id": 1}]',
    "id beyond 64 bits": '[{"user_id": 1, "item_id": 1}, {"user_id": 18446744073709551615, '
                         '"item_id": 1}]',
}


def _users(users: str) -> str:
    return (f'{{"user_data": {users}, "item_data": [{{"item_id": 1}}], '
            '"interactions": [{"user_id": 1, "item_id": 1}]}')


# The same for users: record rules, group rules, field rules, in that order.
BAD_USERS = {
    "group key twice": '[{"user_id": 1, "continuous": {"age": 1, "age": 2}}]',
    "group not an object + unknown key": '[{"user_id": 1, "continuous": [1]}, '
                                         '{"user_id": 2, "categorcal": {}}]',
    "empty field name + key twice": '[{"user_id": 1, "text": {"": "x"}}, '
                                    '{"user_id": 2, "user_id": 3}]',
    "case collision + record a string": '[{"user_id": 1, "continuous": {"a": 1, "A": 2}}, "x"]',
    "mixed categorical + missing id": '[{"user_id": 1, "categorical": {"c": "x"}}, '
                                      '{"categorical": {"c": 2}}]',
}


@pytest.mark.parametrize("case", [*BAD, *BAD_USERS])
def test_both_paths_give_the_same_line(tmp_path, monkeypatch, case) -> None:
    text = _raw(BAD[case]) if case in BAD else _users(BAD_USERS[case])
    path = write_doc(tmp_path / "bad.json", text)
    fast = invoke("featurize", path, "--store", tmp_path / "store")
    _rule_by_rule(monkeypatch)
    slow = invoke("featurize", path, "--store", tmp_path / "store")
    assert fast.exit_code == slow.exit_code == 1
    assert fast.stderr == slow.stderr
    assert len(fast.stderr.strip().splitlines()) == 1 and fast.stderr.startswith("Error: ")


def test_drop_policies_count_the_same_rows_on_both_paths(tmp_path, monkeypatch) -> None:
    path = write_doc(tmp_path / "doc.json", _raw(
        '[{"user_id": 1, "item_id": 1, "timestamp": 5}, {"user_id": 7, "item_id": 1}, '
        '{"user_id": 7, "item_id": 9}, {"user_id": 2, "item_id": 9, "timestamp": 6}, '
        '{"user_id": 2, "item_id": 1, "timestamp": "zz"}, {"user_id": 2, "item_id": 1, '
        '"timestamp": 7}]'))
    args = ("--on-unknown-user=drop", "--on-unknown-item=drop",
            "--set", "validate.on_bad_timestamp=drop")
    reports = []
    for store in ("fast", "slow"):
        if store == "slow":
            _rule_by_rule(monkeypatch)
        result = invoke("featurize", path, "--store", tmp_path / store, *args)
        assert result.exit_code == 0, result.output
        reports.append(json.loads((tmp_path / store / "report.json").read_text()))
    sections = [r["sections"]["interactions"] for r in reports]
    assert sections[0] == sections[1] == {
        "seen": 6, "kept": 2,
        "dropped": {"unknown_user": 2, "unknown_item": 1, "bad_timestamp": 1}}
