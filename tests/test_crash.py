"""A crash test in the spirit of SQLite's: kill -9 featurize, fit and ``fit --resume`` at
seeded random moments; the store and the served model are always the old one or the new
one, complete, never a mix and never missing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest
from conftest import copy_store, tree_digest, write_doc

from unirec import Store, featurize
from unirec.serve.recommender import Recommender

FIT = ["--set", "train.dim=32", "--set", "train.batch_size=256"]


def _doc(n_interactions: int) -> dict:
    """Ids and categories only: featurize needs no text or image model, so it is quick."""
    return {
        "user_data": [{"user_id": u, "categorical": {"g": f"g{u % 3}"}} for u in range(20)],
        "item_data": [{"item_id": i, "categorical": {"c": f"c{i % 4}"}} for i in range(15)],
        "interactions": [{"user_id": n % 20, "item_id": (n * 7) % 15, "timestamp": 1_700_000_000
                          + n} for n in range(n_interactions)],
    }


def _kill_at(args: list[str], delay: float) -> bool:
    """Run ``unirec ARGS``; kill -9 it after ``delay`` s. True if it was killed running."""
    proc = subprocess.Popen([sys.executable, "-m", "unirec", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _model_is_complete(store) -> None:
    rec = Recommender._read(store, store / "model", store / "model" / "bundle.json")
    assert rec.n_items > 0 and len(rec.users) == len(rec._a["user_ids"])
    assert json.loads((store / "model" / "config.json").read_text())["summary"]
    assert (store / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_kill_9_featurize_keeps_the_old_or_the_new_store(tmp_path) -> None:
    rng = random.Random(1101)
    store = tmp_path / "store"
    featurize(write_doc(tmp_path / "old.json", _doc(60)), store)
    old = tree_digest(store)
    new = write_doc(tmp_path / "new.json", _doc(90))
    for _ in range(3):
        _kill_at(["featurize", str(new), "--store", str(store)], rng.uniform(0.3, 6.0))
        st = Store(store)
        if tree_digest(store) != old:  # then the swap happened: wholly the new store
            assert st.manifest["counts"]["interactions"] == 90
            assert st.counts()["interactions"] == 90
            old = tree_digest(store)
        assert st.counts()["users"] == 20


@pytest.mark.slow
def test_kill_9_fit_and_resume_keep_the_old_or_the_new_model(fitted_store, tmp_path) -> None:
    rng = random.Random(1102)
    store = copy_store(fitted_store, tmp_path / "store")
    killed = 0
    for args in (["--epochs", "3"], ["--epochs", "3"], ["--epochs", "4", "--resume"]):
        old = tree_digest(store / "model")
        killed += _kill_at(["fit", "--store", str(store), *args, *FIT], rng.uniform(2.0, 12.0))
        assert (store / "model" / "bundle.json").is_file(), "the served model went missing"
        if tree_digest(store / "model") != old:
            _model_is_complete(store)
    assert killed, "no fit was killed while running: the test proved nothing"
    done = subprocess.run([sys.executable, "-m", "unirec", "fit", "--store", str(store),
                           "--epochs", "4", "--resume", *FIT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _model_is_complete(store)
    assert not [p for p in store.iterdir() if ".building-" in p.name]
