"""New users and items from records: the towers restored from a store, records compiled with
the store's fitted state (checked against what featurize wrote), and the vectors they give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from unirec.errors import DataError, QueryError
from unirec.model.restore import load_model, user_histories
from unirec.serve.cold import cold_encoder, embed_records, record_history_index
from unirec.serve.recommender import Recommender
from unirec.store import Store
from unirec.store.csr import csr_from_lists


@pytest.fixture(scope="module")
def doc(fitted_store) -> dict:
    """The input document the store was featurized from."""
    return json.loads(Path(Store(fitted_store).manifest["input"]["path"]).read_text())


@pytest.fixture(scope="module")
def rec(fitted_store) -> Recommender:
    return Recommender.load(fitted_store)


def _no_model(values):
    raise AssertionError(f"the store already embedded these, yet the model was asked: {values}")


def _with_history(rec: Recommender, record: dict, histories: np.ndarray) -> dict:
    """A known user's document record plus the serving history fit embedded them with."""
    idx = rec.user_index([record["user_id"]])[0]
    items = histories[idx][histories[idx] > 0]
    return {**record, "history": [i.item() for i in rec.item_ids(items)]}


def test_restored_towers_reproduce_the_fitted_vectors(fitted_store) -> None:
    model = load_model(fitted_store)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    items = np.load(fitted_store / "model" / "item_embeddings.npy")
    users = np.load(fitted_store / "model" / "user_embeddings.npy")
    with torch.no_grad():
        got_items = model.item(torch.arange(len(items))).numpy()
        hist = torch.from_numpy(user_histories(fitted_store))
        got_users = model.user(torch.arange(len(users)), hist).numpy()
    np.testing.assert_allclose(got_items, items, atol=1e-5)
    np.testing.assert_allclose(got_users, users, atol=1e-5)


@pytest.mark.parametrize("side, section, file", [("user", "user_data", "users"),
                                                  ("item", "item_data", "items")])
def test_document_records_compile_to_the_stores_rows(fitted_store, doc, side, section,
                                                     file) -> None:
    """Every record of the document, compiled alone, gives exactly featurize's tensor rows."""
    compiled = cold_encoder(fitted_store).compiler.compile(side, doc[section], _no_model,
                                                           _no_model)
    want = load_file(str(fitted_store / "tensors" / f"{file}.safetensors"))
    columns = {c for c in want if c not in ("_index", "popularity")}
    assert set(compiled.rows) == columns
    for col in columns:
        np.testing.assert_array_equal(compiled.rows[col], want[col][1:], err_msg=col)
    if side == "item":  # the synthetic items have titles and images: both were looked up
        assert any(c.startswith("image.") for c in columns)
        assert any(c.startswith("text.") for c in columns)


def test_known_user_record_with_history_is_fits_vector_without_the_id(fitted_store, doc,
                                                                       rec) -> None:
    histories = user_histories(fitted_store)
    records = [_with_history(rec, r, histories) for r in doc["user_data"]]
    got = embed_records(fitted_store, "user", records)
    assert got.shape == (len(records), rec.users.shape[1]) and got.dtype == np.float32
    model = load_model(fitted_store)  # exactly the tower with the id token zeroed
    d = model.item_table.embedding_dim  # unit length; the category affinity's columns follow
    np.testing.assert_allclose(np.linalg.norm(got[:, :d], axis=1), 1.0, atol=1e-5)
    idx = rec.user_index([r["user_id"] for r in records])
    with torch.no_grad():
        t = torch.from_numpy(idx)
        no_id = model.user.encode(model.user.gather(t), None, torch.from_numpy(histories[idx]))
    np.testing.assert_allclose(got, no_id.numpy(), atol=1e-5)
    # Close to what fit computed with the id, which is one token of eight here. Measured on
    # this 3-epoch dim-32 model: mean cosine 0.96, 5th percentile 0.89, min 0.78.
    cos = (got[:, :d] * rec.users[idx, :d]).sum(1)
    np.testing.assert_allclose(got[:, d:], rec.users[idx, d:], atol=1e-5)  # same history
    assert cos.mean() > 0.93 and np.percentile(cos, 5) > 0.8, np.sort(cos)[:10]
    # the history matters: without it the vectors move away from fit's (measured mean 0.88)
    bare = embed_records(fitted_store, "user", doc["user_data"])
    assert (bare * rec.users[idx]).sum(1).mean() < cos.mean() - 0.03


def test_cold_item_equal_to_a_known_item_finds_it(fitted_store, doc, rec) -> None:
    records = [{k: v for k, v in r.items() if k != "item_id"} for r in doc["item_data"]]
    vectors = embed_records(fitted_store, "item", records)
    own = rec.item_index([r["item_id"] for r in doc["item_data"]])
    top, _ = rec.rank(vectors, 5)
    # measured: the item itself is nearest for 83% of items, in the top 5 for 96%
    assert np.mean(top[:, 0] == own) > 0.7
    assert np.mean([o in row for o, row in zip(own, top, strict=True)]) > 0.9


def test_unknown_categorical_is_out_of_vocabulary(fitted_store) -> None:
    enc = cold_encoder(fitted_store)
    base = {"continuous": {"age": 31}, "categorical": {"gender": "f"}}
    odd = {**base, "categorical": {"gender": "f", "country": "Atlantis"}}
    rows = enc.compiler.compile("user", [odd, base], _no_model, _no_model).rows
    assert rows["categorical.country"].tolist() == [0, 0]
    assert rows["categorical.gender"][0] > 0
    a, b = embed_records(fitted_store, "user", [odd, base])
    np.testing.assert_allclose(a, b, atol=1e-6)  # OOV == missing, as in featurize


def test_multi_valued_scalar_and_unseen_values(fitted_store, doc) -> None:
    enc = cold_encoder(fitted_store)
    item = doc["item_data"][0]
    tag = item["categorical"]["tags"][0]
    one = {"categorical": {"tags": tag}}  # one value of a list field
    rows = enc.compiler.compile("item", [one, {"categorical": {"tags": [tag]}}], _no_model,
                                _no_model).rows
    np.testing.assert_array_equal(rows["categorical.tags"][0], rows["categorical.tags"][1])
    assert rows["categorical.tags.length"].tolist() == [1, 1]


def test_unseen_text_and_images_go_to_the_embedders_once(fitted_store, doc, tmp_path) -> None:
    enc = cold_encoder(fitted_store)
    calls: list[list[str]] = []

    def text(values):
        calls.append(list(values))
        return np.full((len(values), enc.model.shared.text.shape[1]), 0.1, np.float32)

    def image(paths):
        calls.append(list(paths))
        return np.zeros((len(paths), enc.model.shared.image.shape[1]), np.float32), \
            np.ones(len(paths), bool)

    known = doc["item_data"][0]
    absent = str(tmp_path / "absent.png")
    records = [{"text": {"title": known["text"]["title"]},
                "image": {"main_image": known["image"]["main_image"]}},  # relative: as given
               {"text": {"title": "a title nobody wrote"}},
               {"text": {"title": "a title nobody wrote"}},
               {"image": {"main_image": absent}}]
    rows = enc.compiler.compile("item", records, text, image).rows
    assert calls == [["a title nobody wrote"], [absent]]  # each new value once, known never
    n_text = enc.model.shared.text.shape[0]
    assert 0 < rows["text.title"][0] < n_text <= rows["text.title"][1] == rows["text.title"][2]
    assert rows["image.main_image"][0] > 0 and rows["image.main_image.missing"][0] == 0.0
    assert rows["image.main_image"][3] == 0  # unreadable: the zero row, flagged
    assert rows["image.main_image.missing"][3] == 1.0
    # through the real path: no model is needed for a file that is not there
    vec = embed_records(fitted_store, "item", [records[3]])
    assert vec.shape == (1, enc.dim) and np.isfinite(vec).all()


def test_history_indices_and_exclusion(fitted_store, doc, rec) -> None:
    ids = [r["item_id"] for r in doc["item_data"][:3]]
    lists = record_history_index(fitted_store, [{"history": ids}, {}])
    np.testing.assert_array_equal(lists[0], rec.item_index(ids))
    assert len(lists[1]) == 0
    indptr, indices = csr_from_lists(lists)
    assert indptr.tolist() == [0, 3, 3]
    vec = embed_records(fitted_store, "user", [{"history": ids}])
    top, _ = rec.rank(vec, rec.n_items, exclude=csr_from_lists(lists[:1]))
    assert not set(top[0].tolist()) & set(lists[0].tolist())
    # order matters to the history encoder: most recent last
    rev = embed_records(fitted_store, "user", [{"history": ids[::-1]}])
    assert not np.allclose(vec, rev)


@pytest.mark.parametrize("records, error, words", [
    ([{"history": [1, "no-such-item"]}], QueryError, "history item 'no-such-item'"),
    ([{"history": "1"}], DataError, "user record 0: history: must be a list"),
    ([{"continuous": {"age": "31"}}], DataError, "user record 0: continuous.age: must be a "
                                                  "number, got a string"),
    ([{}, {"continuous": [1]}], DataError, "user record 1: continuous: must be an object"),
    ([{"categorical": {"colour": "red"}}], DataError, "categorical.colour: unknown field"),
    ([{"catgorical": {}}], DataError, "unknown key 'catgorical' (did you mean 'categorical'"),
    ([{"categorical": {"country": ["FR"]}}], DataError, "categorical.country: must be one "
                                                        "value"),
    ([{"temporal": {"prev_interactions": 3}}], DataError, "temporal.prev_interactions"),
    ([{"user_id": 1.5}], DataError, "user_id: must be an integer or a string"),
    (["not a record"], QueryError, "must be JSON objects"),
])
def test_bad_records_name_the_field(fitted_store, records, error, words) -> None:
    with pytest.raises(error) as info:
        embed_records(fitted_store, "user", records)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_wrong_side_and_empty(fitted_store) -> None:
    with pytest.raises(QueryError, match="users or items"):
        embed_records(fitted_store, "shop", [{}])
    assert embed_records(fitted_store, "item", []).shape == (0, cold_encoder(fitted_store).dim)
    with pytest.raises(DataError, match="unknown key 'history'"):
        embed_records(fitted_store, "item", [{"history": []}])
