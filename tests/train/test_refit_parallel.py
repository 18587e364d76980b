"""``train.refit_parallel``: the refit trained in a second process beside the early-stopped
run (``unirec.train.refit_ahead``) is the refit trained afterwards, to the bit.

Why: the parallel refit is a schedule, not a different model; its one promise is that the
served weights do not depend on it. Both fits run through the CLI in their own process on
one thread each (the sequential refit and the child then do the same arithmetic), on the
synthetic store; a fit the first run stops early on must also be cut short correctly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from conftest import copy_store, run_unirec

SETS = ("--set", "train.batch_size=256", "--set", "train.dim=32", "--set",
        "train.rank.enabled=false")


def _fit(src, dst, *args: str) -> dict:
    store = copy_store(src, dst)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = run_unirec("fit", "--store", store, *SETS, *args, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    summary = json.loads((store / "model" / "config.json").read_text())["summary"]
    return {"store": store, "summary": summary,
            **{f: np.load(store / "model" / f"{f}.npy") for f in ("user_embeddings",
                                                                   "item_embeddings")}}


def test_the_parallel_refit_serves_the_same_bits_as_refitting_afterwards(
        synthetic_store, tmp_path) -> None:
    par = _fit(synthetic_store, tmp_path / "par", "--epochs", "4", "--set",
               "train.refit_parallel=true")
    seq = _fit(synthetic_store, tmp_path / "seq", "--epochs", "4", "--set",
               "train.refit_parallel=false")
    assert par["summary"]["refit_parallel"] and not seq["summary"]["refit_parallel"]
    assert par["summary"]["refit_epochs"] == seq["summary"]["refit_epochs"] >= 1
    for f in ("user_embeddings", "item_embeddings"):
        assert np.array_equal(par[f], seq[f]), f
    assert not (par["store"] / "model" / "refit-ahead.safetensors").exists()


def test_an_early_best_epoch_is_kept_while_the_child_trains_on(synthetic_store,
                                                               tmp_path) -> None:
    """With a patience of 3 and a high min_gain the first run stops 3 epochs after its best,
    so the child has trained past the kept epoch: it must serve that epoch's weights, not its
    last ones."""
    sets = ("--epochs", "8", "--set", "train.patience=3", "--set", "train.min_gain=0.5",
            "--set", "train.lr=0.02")
    par = _fit(synthetic_store, tmp_path / "par", *sets, "--set", "train.refit_parallel=true")
    seq = _fit(synthetic_store, tmp_path / "seq", *sets, "--set", "train.refit_parallel=false")
    assert par["summary"]["refit_epochs"] == seq["summary"]["refit_epochs"]
    assert par["summary"]["refit_epochs"] < par["summary"]["epochs"], par["summary"]
    for f in ("user_embeddings", "item_embeddings"):
        assert np.array_equal(par[f], seq[f]), f


def test_a_script_without_a_main_guard_runs_once(synthetic_store, tmp_path) -> None:
    """A user's script calling ``unirec.fit`` at top level, with no ``if __name__ ==
    "__main__"``: the refit's process is a fresh ``python -m``, so the script runs once
    (multiprocessing's spawn would import it again in the child and fit twice)."""
    store = copy_store(synthetic_store, tmp_path / "store")
    marker = tmp_path / "runs.txt"
    script = tmp_path / "train.py"
    script.write_text(
        "import unirec\n"
        "from unirec.config import load_config\n"
        f"open({str(marker)!r}, 'a').write('run\\n')\n"
        "cfg = load_config(overrides=['train.epochs=2', 'train.batch_size=256', "
        "'train.dim=16', 'train.rank.enabled=false', 'train.refit_parallel=true'])\n"
        f"print(unirec.fit({str(store)!r}, cfg, progress=False)['refit_parallel'])\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "True", out.stdout
    assert marker.read_text() == "run\n"


def test_the_rescoring_models_parallel_refit_is_its_refit_in_order(synthetic_store,
                                                                   tmp_path) -> None:
    """train.rank.rescore refits its model beside its first run the same way: the served
    rescoring vectors are the same bits either way."""
    sets = ("--epochs", "3", "--set", "train.rank.enabled=true", "--set",
            "train.rank.rescore=true", "--set", "train.rank.epochs=1", "--set",
            "train.rank.fit_on=train")
    got = {}
    for mode in ("true", "false"):
        fit = _fit(synthetic_store, tmp_path / mode, *sets, "--set",
                   f"train.refit_parallel={mode}")
        rank = fit["store"] / "model" / "rank"
        meta = json.loads((rank / "rank.json").read_text())["rescore"]
        assert meta["refit_parallel"] is (mode == "true") and meta["refit_epochs"] >= 1
        got[mode] = [np.load(rank / f"rescore_{side}.npy") for side in ("user", "item")]
    for par, seq in zip(got["true"], got["false"], strict=True):
        assert np.array_equal(par, seq)
