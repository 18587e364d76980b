"""The synthetic generator: exact sizes, valid references, planted signal, faithful writers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from unirec.datasets import default_shape, generate, synthesize, write_document, write_folder
from unirec.datasets.synthetic import AGE_EDGES, CATEGORIES, INTERACTION_TYPES, MAX_SEQ

CATS = list(CATEGORIES)


@pytest.fixture(scope="module")
def data():
    return synthesize(400, 300, 20_000, seed=7)


@pytest.fixture(scope="module")
def doc(data):
    return data.document()


def test_same_seed_same_document_other_seed_differs() -> None:
    assert generate(30, 40, 500, seed=3) == generate(30, 40, 500, seed=3)
    assert generate(30, 40, 500, seed=3) != generate(30, 40, 500, seed=4)


@pytest.mark.parametrize("shape", [(400, 300, 20_000), (50, 5, 20), (1, 1, 0), (7, 30, 3)])
def test_counts_equal_requested_sizes(shape: tuple[int, int, int]) -> None:
    d = generate(*shape, seed=1)
    assert [len(d[k]) for k in ("user_data", "item_data", "interactions")] == list(shape)


def test_ids_unique_and_every_reference_exists(doc) -> None:
    users = [u["user_id"] for u in doc["user_data"]]
    items = [i["item_id"] for i in doc["item_data"]]
    assert len(set(users)) == len(users) and len(set(items)) == len(items)
    assert {r["user_id"] for r in doc["interactions"]} <= set(users)
    assert {r["item_id"] for r in doc["interactions"]} <= set(items)
    prev = {i for u in doc["user_data"] for i in u["temporal"]["prev_interactions"]}
    assert prev <= set(items)


def test_fields_have_the_documented_shape(doc) -> None:
    for u in doc["user_data"]:
        assert set(u["categorical"]) == {"occupation", "country", "gender"}
        assert 18 <= u["continuous"]["age"] <= 80 and u["continuous"]["income"] > 0
        assert 0 <= len(u["temporal"]["prev_interactions"]) <= MAX_SEQ
    for it in doc["item_data"]:
        cat, tags = it["categorical"]["category"], it["categorical"]["tags"]
        assert 1 <= len(tags) <= 3 and len(set(tags)) == len(tags)
        assert any(w in CATEGORIES[cat] for w in it["text"]["title"].split())
        assert tags[0] in CATEGORIES[cat]
        assert 0 <= len(it["temporal"]["price_history"]) <= MAX_SEQ
        assert it["continuous"]["price"] > 0 and "image" not in it
    assert {r["interaction_type"] for r in doc["interactions"]} == set(INTERACTION_TYPES)


def test_timestamps_are_iso_and_increase_per_user(doc) -> None:
    last: dict[int, datetime] = {}
    for r in doc["interactions"]:
        t = datetime.fromisoformat(r["timestamp"])
        assert t.year == 2024 and t >= last.get(r["user_id"], t)
        last[r["user_id"]] = t


def test_interactions_follow_the_planted_preferences(data) -> None:
    inter, items, users = data.interactions, data.items, data.users
    cat = np.array([CATS.index(c) for c in items["categorical"].struct.field("category")])
    u = inter["user_id"].to_numpy() - 1
    hit = (cat[inter["item_id"].to_numpy() - 1][:, None] == data.preferred[u]).any(axis=1)
    share = np.bincount(cat, minlength=len(CATS)) / len(cat)
    chance = np.where(data.preferred >= 0, share[data.preferred], 0.0).sum(axis=1)[u].mean()
    assert hit.mean() > 0.75 and hit.mean() > 3 * chance
    buy = (inter["interaction_type"] == "purchase").to_numpy()
    assert buy[hit].mean() > 2 * buy[~hit].mean()  # purchases concentrate on preferred items
    # observable without the truth: occupation and age group predict the categories
    occupation = users["categorical"].struct.field("occupation").to_numpy()
    age_group = np.digitize(users["continuous"].struct.field("age").to_numpy(), AGE_EDGES)
    counts = pl.DataFrame({"occ": occupation[u], "age": age_group[u],
                           "cat": cat[inter["item_id"].to_numpy() - 1]})
    counts = counts.group_by("occ", "age", "cat").len()
    top3 = counts.sort("len", descending=True).group_by("occ", "age").head(3)["len"].sum()
    assert top3 / counts["len"].sum() > 0.6  # shuffled users: ~0.4 (category skew)


def test_document_writer_round_trips(tmp_path: Path, data, doc) -> None:
    write_document(data, tmp_path / "doc.json")
    assert json.loads((tmp_path / "doc.json").read_text()) == doc
    write_document(doc, tmp_path / "again.json")  # plain record lists are accepted too
    assert json.loads((tmp_path / "again.json").read_text()) == doc


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_folder_writer_round_trips(tmp_path: Path, data, doc, fmt: str) -> None:
    write_folder(data, tmp_path / "frames", fmt=fmt)
    write_folder(doc, tmp_path / "records", fmt=fmt)
    read = pl.read_ndjson if fmt == "jsonl" else pl.read_parquet
    for src in ("frames", "records"):
        for section, name in [("user_data", "users"), ("item_data", "items"),
                              ("interactions", "interactions")]:
            assert read(tmp_path / src / f"{name}.{fmt}").to_dicts() == doc[section]


def test_folder_writer_rejects_unknown_format(tmp_path: Path, data) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        write_folder(data, tmp_path, fmt="csv")


def test_images_written_readable_and_relative(tmp_path: Path) -> None:
    with_images = generate(10, 25, 100, seed=2, images_dir=tmp_path / "images")
    plain = generate(10, 25, 100, seed=2)
    for it, bare in zip(with_images["item_data"], plain["item_data"], strict=True):
        path = it.pop("image")["main_image"]
        assert path == f"images/i{it['item_id']}.png" and it == bare
        with Image.open(tmp_path / path) as im:
            assert im.format == "PNG" and im.size == (32, 32)
    assert with_images["interactions"] == plain["interactions"]


def test_default_shape_scales_users_and_items() -> None:
    assert default_shape(1_000_000) == (50_000, 20_000, 1_000_000)
    assert min(default_shape(0)[:2]) >= 10
