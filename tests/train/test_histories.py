"""Histories by reference, as training and serving read them: the gather, the serving
history, and a store of the old format refused with a clear message."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import copy_store, invoke

from unirec.model.inputs import gather_history, load_sequences
from unirec.store import STORE_FORMAT, Store, serving_histories


def test_gather_pads_left_and_keeps_the_most_recent_last() -> None:
    items = torch.tensor([7, 8, 9, 1, 2], dtype=torch.int32)
    end, length = torch.tensor([3, 3, 0, 5, 4]), torch.tensor([3, 1, 0, 2, 4])
    got = gather_history(items, end, length, 3)
    assert got.dtype == torch.int32
    assert got.tolist() == [[7, 8, 9], [0, 0, 9], [0, 0, 0], [0, 1, 2], [8, 9, 1]]


def test_serving_history_is_the_last_items_before_test(synthetic_store) -> None:
    """Every non-test interaction of every type, in (time, position) order, the last L."""
    store = Store(synthetic_store)
    width = store.manifest["samples"]["history_length"]
    got = serving_histories(store, width)
    want = store.sql(
        "SELECT user_index, list(item_index ORDER BY time, position) AS h FROM ("
        "SELECT u.user_index, m.item_index, i.timestamp AS time, i.position FROM interactions i "
        "JOIN user_map u USING (user_id) JOIN item_map m USING (item_id)) "
        "WHERE position NOT IN (SELECT position FROM samples WHERE split = 'test') "
        "GROUP BY user_index")
    expected = np.zeros_like(got)
    for user, hist in want.iter_rows():
        tail = hist[-width:]
        expected[user, width - len(tail):] = tail
    assert got.shape == (store.counts()["user_map"] + 1, width)
    assert np.array_equal(got, expected) and (got[:, -1] > 0).sum() > 100
    seq = load_sequences(store)
    assert seq["offsets"][-1] == len(seq["items"]) == store.counts()["interactions"]


def test_fit_refuses_an_old_format_store(synthetic_store, tmp_path) -> None:
    store = copy_store(synthetic_store, tmp_path / "store")
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["store_format"] = STORE_FORMAT - 1
    (store / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("fit", "--store", store)
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    assert f"format {STORE_FORMAT - 1}" in message and "re-run `unirec featurize" in message
