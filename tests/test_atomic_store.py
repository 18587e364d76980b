"""A featurize that dies leaves the previous store byte-for-byte intact and usable."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import BASE_DOC, invoke, tree_digest, write_doc

from unirec import Store, featurize
from unirec.datasets import synthesize, write_document


@pytest.mark.slow
def test_sigkill_mid_featurize_leaves_old_store(tmp_path) -> None:
    store = tmp_path / "store"
    featurize(write_doc(tmp_path / "small.json", copy.deepcopy(BASE_DOC)), store)
    before = tree_digest(store)
    big = tmp_path / "big.json"
    write_document(synthesize(4000, 1000, 400_000, seed=1), big)
    proc = subprocess.Popen([sys.executable, "-m", "unirec", "featurize", str(big), "--store",
                             str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    building = []
    while time.time() < deadline and not building:
        building = [p for p in tmp_path.iterdir() if ".building-" in p.name]
        time.sleep(0.02)
    assert building, "featurize never started building"
    time.sleep(0.5)  # let it write into the temporary store
    assert proc.poll() is None, "featurize finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tree_digest(store) == before
    assert Store(store).manifest["counts"] == {"interactions": 3, "items": 3, "users": 3}
    assert Store(store).counts()["samples"] == 3
    # the next featurize sweeps the dead build and swaps in the new store
    result = invoke("featurize", big, "--store", store)
    assert result.exit_code == 0, result.output
    assert Store(store).counts()["interactions"] == 400_000
    assert [p.name for p in tmp_path.iterdir() if ".building-" in p.name] == []


def test_success_replaces_the_store_and_leaves_no_temporaries(tmp_path, doc) -> None:
    store = tmp_path / "store"
    featurize(write_doc(tmp_path / "a.json", doc), store)
    (store / "stray-file").write_text("from the old store")
    doc["interactions"] = doc["interactions"][:2]
    featurize(write_doc(tmp_path / "b.json", doc), store)
    assert not (store / "stray-file").exists()
    assert Store(store).counts()["interactions"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "store"]
