"""Models swap atomically: a re-fit or a resumed fit never takes the served model away, a
model of a store featurized again meanwhile is refused, and broken inputs to fit and to the
serving path are one-line errors."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from conftest import (
    copy_store,
    invoke,
    one_error_line,
    run_unirec,
    serve_on_loopback,
    tree_digest,
    write_doc,
)

import unirec
from unirec.config import Config, TrainConfig
from unirec.errors import QueryError, StoreError
from unirec.serve.http import create_app
from unirec.serve.recommender import Recommender, file_key

FIT = ("--set", "train.dim=32", "--set", "train.batch_size=256")


@pytest.mark.slow
def test_server_answers_through_a_refit_and_a_resume(fitted_store, tmp_path) -> None:
    store = copy_store(fitted_store, tmp_path / "store")
    before = file_key(store / "model" / "bundle.json")
    stop, statuses = threading.Event(), []
    user = Recommender.load(store).user_ids(np.array([1]))[0].item()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set() and len(statuses) < 20_000:
                for path, params in (("/recommend", {"user": user, "k": 5}),
                                     ("/similar", {"item": 1, "k": 5}), ("/health", {})):
                    try:
                        statuses.append(client.get(path, params=params).status_code)
                    except httpx.HTTPError as exc:
                        statuses.append(type(exc).__name__)
                time.sleep(0.005)

    with serve_on_loopback(create_app(store, cold=False)) as url:
        loop = threading.Thread(target=hammer, args=(url,))
        loop.start()
        try:
            refit = run_unirec("fit", "--store", store, "--epochs", "1", *FIT, timeout=300)
            resumed = run_unirec("fit", "--store", store, "--epochs", "2", "--resume", *FIT,
                                 timeout=300)
        finally:
            stop.set()
            loop.join(60)
    assert refit.returncode == 0, refit.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 2 epochs" in resumed.stdout
    failures = [s for s in statuses if s != 200]
    assert len(statuses) > 30 and failures == [], (len(statuses), failures[:5])
    assert file_key(store / "model" / "bundle.json") != before
    assert not (store / ".model.training").exists()


def test_a_model_of_a_store_featurized_again_is_refused(fitted_store, tmp_path,
                                                        monkeypatch) -> None:
    import json

    import unirec.model.outputs as outputs

    store = copy_store(fitted_store, tmp_path / "store")
    model_before = tree_digest(store / "model")
    real = outputs.embed_all

    def refeaturized_meanwhile(*args, **kwargs):  # another tool replaced the store's data
        manifest = json.loads((store / "manifest.json").read_text())
        manifest["input"]["sha256"] = "0" * 64
        (store / "manifest.json").write_text(json.dumps(manifest))
        return real(*args, **kwargs)

    monkeypatch.setattr(outputs, "embed_all", refeaturized_meanwhile)
    cfg = Config(train=TrainConfig(epochs=1, dim=32, batch_size=256))
    with pytest.raises(StoreError, match="featurized again while fit ran"):
        unirec.fit(store, cfg, progress=False)
    assert tree_digest(store / "model") == model_before
    assert not [p for p in store.iterdir() if ".building-" in p.name]


def test_resume_with_a_changed_or_broken_checkpoint_is_one_line(fitted_store, tmp_path) -> None:
    store = copy_store(fitted_store, tmp_path / "store")
    line = one_error_line(invoke("fit", "--store", store, "--resume", "--epochs", "4",
                                 "--set", "train.dim=16"))
    assert "cannot resume" in line and "train.dim 32 -> 16" in line, line
    ckpt = store / "model" / "checkpoint" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    line = one_error_line(invoke("fit", "--store", store, "--resume", "--epochs", "4", *FIT))
    assert "cannot resume" in line and "damaged" in line, line
    assert (store / "model" / "bundle.json").is_file()  # the served model is still there


def test_serving_errors_are_one_line(fitted_store, tmp_path) -> None:
    store = copy_store(fitted_store, tmp_path / "store")
    huge = invoke("recommend", "--store", store, "--user", "1", "-k", "1000000000",
                  "--format", "json")
    assert huge.exit_code == 0, huge.output
    vectors = store / "model" / "item_embeddings.npy"
    vectors.write_bytes(vectors.read_bytes()[:-64])
    proc = run_unirec("recommend", "--store", store, "--user", "1")
    assert proc.returncode == 1 and "damaged" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("user", [1.5, True, b"1", None, np.float64(1.0)])
def test_python_api_ids_must_be_ints_or_strings(fitted_store, user) -> None:
    with pytest.raises(QueryError):
        unirec.recommend(user, store=fitted_store)


def test_python_api_matches_ids_by_type_and_k_is_a_positive_int(fitted_store) -> None:
    ids, _ = unirec.recommend(1, 3, store=fitted_store)
    same, _ = unirec.recommend(np.int64(1), 3, store=fitted_store)
    assert list(ids) == list(same) and len(ids) == 3
    with pytest.raises(QueryError, match="items must be a list"):
        unirec.score(1, "12", store=fitted_store)
    for k in (2.5, "3", None, 0, True):
        with pytest.raises(QueryError, match="k must be"):
            unirec.recommend(1, k, store=fitted_store)
    all_items, _ = unirec.recommend(1, 10**12, store=fitted_store, exclude_seen=False)
    assert len(all_items) == Recommender.load(fitted_store).n_items


@pytest.mark.parametrize("n", [1, 3])
def test_fit_on_a_store_with_very_few_interactions(tmp_path, n) -> None:
    doc = {"user_data": [{"user_id": u} for u in range(2)],
           "item_data": [{"item_id": i} for i in range(2)],
           "interactions": [{"user_id": j % 2, "item_id": (j + 1) % 2, "timestamp": j}
                            for j in range(n)]}
    store = tmp_path / "store"
    unirec.featurize(write_doc(tmp_path / "d.json", doc), store)
    summary = unirec.fit(store, Config(train=TrainConfig(epochs=1, dim=8)), progress=False)
    assert summary["epochs"] == 1
    assert (store / "model" / "bundle.json").is_file()
