"""DDP under torchrun on CPU (gloo): two ranks train one valid model, as good as one rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import copy_store

from unirec import Store
from unirec.config import Config, TrainConfig
from unirec.train.loop import fit

SETTINGS = ["--set", "train.epochs=4", "--set", "train.patience=4",
            "--set", "train.batch_size=256"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, checkerboard_store) -> None:
    single = copy_store(checkerboard_store, tmp_path / "single")
    fit(single, Config(train=TrainConfig(epochs=4, patience=4, batch_size=256)), progress=False)
    ddp = copy_store(checkerboard_store, tmp_path / "ddp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE",
                                                                    "MASTER_", "LOCAL_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29517", "-m", "unirec", "fit", "--store", str(ddp), *SETTINGS],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 epochs") == 1, "rank 0 alone reports and writes"
    rows = [json.loads(x) for x in (ddp / "model" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "stage" not in r]  # the ranking stage's rows
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    n_train = Store(ddp).manifest["samples"]["counts"]["train"]
    # both ranks' samples, each once (the stream keeps short last batches), so
    # samples_per_s is the whole job's, not rank 0's times the world size
    assert rows[0]["samples"] == n_train, (rows[0]["samples"], n_train)
    assert rows[0]["samples_per_s"] == pytest.approx(rows[0]["samples"]
                                                     / rows[0]["train_seconds"], rel=0.01)
    items = np.load(ddp / "model" / "item_embeddings.npy")
    assert np.isfinite(items).all() and np.allclose(np.linalg.norm(items[1:], axis=1), 1, 1e-3)
    best = lambda store: max(json.loads(x).get("val_ndcg@10", 0) for x in  # noqa: E731
                             (store / "model" / "metrics.jsonl").read_text().splitlines())
    assert best(ddp) >= 0.8 * best(single), (best(ddp), best(single))
