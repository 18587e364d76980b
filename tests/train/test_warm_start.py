"""fit --warm-start after featurize --append: new items reach the users of similar ones,
refused cases are one line, and a server swaps to the new model with no failed request."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    checkerboard_document,
    invoke,
    one_error_line,
    run_unirec,
    serve_on_loopback,
    write_doc,
)

import unirec
from unirec.config import Config, TrainConfig

FIT = ("--set", "train.dim=16", "--set", "train.batch_size=256", "--epochs", "3")
NEW = range(1000, 1008)  # new item ids; item 1000 + j is in group j % 4


def _documents(root: Path) -> tuple[Path, Path]:
    """A: the first 17 interactions of each checkerboard user. B: the rest, plus 8 new items
    (two per group), each met by 12 users of its group."""
    doc = checkerboard_document(n_users=120, n_items=120)
    start = 1_700_000_000
    early = [r for r in doc["interactions"] if r["timestamp"] < start + 17]
    late = [r for r in doc["interactions"] if r["timestamp"] >= start + 17]
    items = [{"item_id": i, "categorical": {"group": f"g{(i - 1000) % 4}"}} for i in NEW]
    for it in items:
        group = (it["item_id"] - 1000) % 4
        late += [{"user_id": u, "item_id": it["item_id"], "timestamp": start + 30}
                 for u in range(group, 120, 4)[:12]]
    a = {"user_data": doc["user_data"], "item_data": doc["item_data"], "interactions": early}
    b = {"user_data": [], "item_data": items, "interactions": late}
    return write_doc(root / "a.json", a), write_doc(root / "b.json", b)


@pytest.fixture(scope="module")
def fitted_a(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store of A with a model; copy it before writing."""
    root = tmp_path_factory.mktemp("warm")
    a, b = _documents(root)
    assert invoke("featurize", a, "--store", root / "store").exit_code == 0
    out = invoke("fit", "--store", root / "store", *FIT)
    assert out.exit_code == 0, out.output
    return root / "store", a, b


def _copy(store: Path, to: Path) -> Path:
    return Path(shutil.copytree(store, to))


def test_warm_start_recommends_new_items_to_users_of_similar_ones(fitted_a, tmp_path) -> None:
    store = _copy(fitted_a[0], tmp_path / "store")
    out = invoke("featurize", "--append", fitted_a[2], "--store", store)
    assert out.exit_code == 0 and "8 new items" in out.stdout, out.output
    out = invoke("fit", "--store", store, "--warm-start", *FIT)
    assert out.exit_code == 0 and "warm-started" in out.stdout, out.output
    summary = json.loads((store / "model" / "config.json").read_text())["summary"]
    assert summary["warm_start"]["rows_added"]["item_table.weight"] == len(NEW)
    own = other = 0
    met = {r["user_id"] for r in json.loads(fitted_a[2].read_text())["interactions"]
           if r["item_id"] >= 1000}
    for user in sorted(set(range(120)) - met):  # users who met no new item
        ids, _ = unirec.recommend(user, 10, store=store)
        new = [int(i) for i in ids if int(i) >= 1000]
        own += sum((i - 1000) % 4 == user % 4 for i in new)
        other += sum((i - 1000) % 4 != user % 4 for i in new)
    assert own >= 30 and own > 5 * other, (own, other)


def test_refused_warm_starts_are_one_line(fitted_a, tmp_path) -> None:
    store = _copy(fitted_a[0], tmp_path / "store")
    one_error_line(invoke("fit", "--store", store, "--warm-start", *FIT),
                   "already trained on everything", "featurize --append")
    assert invoke("featurize", "--append", fitted_a[2], "--store", store).exit_code == 0
    one_error_line(invoke("fit", "--store", store, "--warm-start", *FIT, "--set",
                          "train.dim=32"), "train.dim 16 -> 32", "without --warm-start")
    one_error_line(invoke("fit", "--store", store, "--warm-start", "--resume", *FIT),
                   "pick one")
    refit = _copy(fitted_a[0], tmp_path / "refit")
    assert invoke("featurize", "--append", fitted_a[2], "--store", refit,
                  "--refit-stats").exit_code == 0
    one_error_line(invoke("fit", "--store", refit, "--warm-start", *FIT),
                   "refitted (--refit-stats)", "unirec fit --store")
    rebuilt = _copy(fitted_a[0], tmp_path / "rebuilt")
    assert invoke("featurize", fitted_a[1], "--store", rebuilt).exit_code == 0
    one_error_line(invoke("fit", "--store", rebuilt, "--warm-start", *FIT),
                   "no model to warm-start from")


def test_server_swaps_to_the_warm_started_model_without_a_failed_request(fitted_a,
                                                                           tmp_path) -> None:
    from unirec.serve.http import create_app

    store = _copy(fitted_a[0], tmp_path / "store")
    stop, statuses, known = threading.Event(), [], []

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set() and len(statuses) < 20_000:
                for path, params in (("/recommend", {"user": 1, "k": 5}),
                                     ("/similar", {"item": 2, "k": 5}), ("/health", {})):
                    try:
                        statuses.append(client.get(path, params=params).status_code)
                    except httpx.HTTPError as exc:
                        statuses.append(type(exc).__name__)
                known.append(client.get("/similar", params={"item": 1000}).status_code)
                time.sleep(0.005)

    with serve_on_loopback(create_app(store, cold=False)) as url:
        loop = threading.Thread(target=hammer, args=(url,))
        loop.start()
        try:
            appended = run_unirec("featurize", "--append", fitted_a[2], "--store", store,
                                  timeout=300)
            served_after_append = len(statuses)
            # the Python API, as a scheduler would call it
            unirec.fit(store, Config(train=TrainConfig(dim=16, batch_size=256)),
                       progress=False, warm_start=True)
            time.sleep(0.5)  # a few requests on the new model
        finally:
            stop.set()
            loop.join(60)
    assert appended.returncode == 0, appended.stderr
    failures = [s for s in statuses if s != 200]
    assert len(statuses) > served_after_append > 0 and failures == [], failures[:5]
    # item 1000 is unknown to the old model (404) and known once the new one is served
    assert known[0] == 404 and known[-1] == 200, (known[:3], known[-3:])


def test_a_model_that_predates_an_append_keeps_serving(fitted_a, tmp_path) -> None:
    """Between the append and the warm start: known users from the vectors, new records
    through the towers (old rows as trained, the new items' rows at zero)."""
    from unirec.serve.http import create_app

    store = _copy(fitted_a[0], tmp_path / "store")
    assert invoke("featurize", "--append", fitted_a[2], "--store", store).exit_code == 0
    out = invoke("recommend", "--store", store, "--user", "1", "--format", "json")
    assert out.exit_code == 0, out.output
    with serve_on_loopback(create_app(store, cold=True)) as url:
        answer = httpx.post(f"{url}/recommend", json={
            "user": {"categorical": {"group": "g1"}, "history": [1, 5]}, "k": 5})
        # the served catalogue is the old model's until the warm start
        unknown = httpx.post(f"{url}/recommend", json={
            "user": {"categorical": {"group": "g1"}, "history": [1, 1001]}, "k": 5})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 5
    assert unknown.status_code == 400 and "1001" in unknown.json()["error"]


def test_warm_start_continues_the_ranker_and_ranks_new_items(fitted_a, tmp_path) -> None:
    """The ranking stage after fit --warm-start: it starts from the served ranker's weights
    (all of them, the settings unchanged), is judged again, its per-entity parts cover the
    appended items, and the new items still reach the users of their group once ranked."""
    import numpy as np

    store = _copy(fitted_a[0], tmp_path / "store")
    assert (store / "model" / "rank" / "rank.json").is_file()
    n_before = len(np.load(store / "model" / "rank" / "item_part.npy"))
    assert invoke("featurize", "--append", fitted_a[2], "--store", store).exit_code == 0
    out = invoke("fit", "--store", store, "--warm-start", *FIT, "--set",
                 "train.rank.enabled=true")
    assert out.exit_code == 0 and "ranking stage" in out.stdout, out.output
    meta = json.loads((store / "model" / "rank" / "rank.json").read_text())
    assert meta["warm_start"]["continued"] == meta["warm_start"]["of"] > 0
    assert "val_rank_ndcg@10" in meta["validation"] and meta["active"]
    assert len(np.load(store / "model" / "rank" / "item_part.npy")) == n_before + len(NEW)
    # the rescoring model is not warm-started: left out, and the fit says so
    assert not meta["rescore"]["active"] and "--warm-start" in meta["rescore"]["note"]
    assert not (store / "model" / "rank" / "rescore_user.npy").exists()
    assert "rescoring model" in out.stdout and "fit --warm-start does not train" in out.stdout
    met = {r["user_id"] for r in json.loads(fitted_a[2].read_text())["interactions"]
           if r["item_id"] >= 1000}
    own = other = 0
    for user in sorted(set(range(120)) - met):
        ids, _ = unirec.recommend(user, 10, store=store, stage="rank")
        new = [int(i) for i in ids if int(i) >= 1000]
        own += sum((i - 1000) % 4 == user % 4 for i in new)
        other += sum((i - 1000) % 4 != user % 4 for i in new)
    assert own >= 20 and own > 3 * other, (own, other)
