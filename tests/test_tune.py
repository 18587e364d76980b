"""`unirec tune`: a search on the validation slice that never loses to the base config, a
config file `unirec fit --config` takes, the trials as SQL, and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import copy_store, invoke, popen_unirec

from unirec.config import TrainConfig, load_config
from unirec.errors import ConfigError
from unirec.tune import DEFAULT_SPACE, Param, load_space, parse_param, resolve_space

pytest.importorskip("optuna")

SMALL = ("--set", "train.epochs=2", "--set", "train.batch_size=256")


def _trials(store: Path) -> list[dict]:
    out = invoke("sql", "SELECT * FROM tuning_trials ORDER BY trial", "--store", store,
                 "--format", "json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.mark.slow
def test_tune_beats_or_matches_the_defaults_and_round_trips_through_fit(
        tmp_path, holdout_store) -> None:
    store = copy_store(holdout_store, tmp_path / "store")
    before = set(os.listdir(tmp_path))
    res = invoke("tune", "--store", store, "--trials", "3", *SMALL, "--seed", "1",
                 "--param", "dim=16,32", "--out", tmp_path / "best.toml", "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("trial,state,metric,value,best_epoch")
    assert "best: trial" in res.stderr
    trials = _trials(store)
    assert [t["trial"] for t in trials] == [0, 1, 2]
    base = trials[0]
    # trial 0 is the base config: the defaults, with --set applied and dim widened to hold 64
    assert base["is_base"] and base["state"] == "COMPLETE"
    assert base["lr"] == TrainConfig().lr and base["dim"] == 64
    assert all(16 <= t["dim"] <= 64 for t in trials)
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert best["value"] >= base["value"] > 0
    assert set(os.listdir(tmp_path)) == before | {"best.toml"}  # the scratch store is gone
    assert not (store / "model").exists()  # trials never touch the store's own model

    cfg = load_config(tmp_path / "best.toml").train
    for name in (p.name for p in DEFAULT_SPACE):
        assert getattr(cfg, name) == pytest.approx(best[name]), name
    assert cfg.epochs == 2 and cfg.batch_size == 256  # the base's own settings carry over
    fit = invoke("fit", "--store", store, "--config", tmp_path / "best.toml")
    assert fit.exit_code == 0, fit.output
    got = float(fit.stdout.split("ndcg@10=")[1].split(",")[0])
    assert got == pytest.approx(best["value"], abs=2e-3)  # same data, seed and settings
    assert "tuning_trials" in invoke("tables", "--store", store).stdout


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_the_best_so_far(tmp_path, holdout_store) -> None:
    store = copy_store(holdout_store, tmp_path / "store")
    out = tmp_path / "best.json"
    proc = popen_unirec("tune", "--store", store, "--trials", "500", "--no-prune", *SMALL,
                        "--out", out)
    try:
        deadline = time.monotonic() + 240
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no trial"
        time.sleep(1.0)  # land the signal inside a later trial
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped by Ctrl-C" in stderr and "Traceback" not in stderr
    trials = _trials(store)
    assert trials and trials[0]["state"] == "COMPLETE"
    assert {t["state"] for t in trials} <= {"COMPLETE", "INTERRUPTED"}
    assert len(trials) < 500
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    saved = load_config(out).train
    assert saved.lr == pytest.approx(best["lr"]) and saved.dim == best["dim"]
    assert not list(tmp_path.glob(".store.tune-*"))


def test_param_syntax_and_one_line_errors() -> None:
    assert parse_param("lr=1e-4:1e-2:log") == Param("lr", 1e-4, 1e-2, log=True)
    assert parse_param("train.dim=32,64") == Param("dim", choices=(32, 64))
    assert parse_param("negatives=0:512") == Param("negatives", 0, 512)
    for bad, why in (("lr", "expected NAME"), ("lr=2:1", "above high"),
                     ("lr=0:1:log", "low > 0"), ("lr=1:2:cube", "LOW:HIGH:log")):
        with pytest.raises(ConfigError, match=why):
            parse_param(bad)
    base = TrainConfig()
    with pytest.raises(ConfigError, match="no such train setting.*'lr'"):
        resolve_space([Param("lrr", 0.1, 0.2)], base)
    with pytest.raises(ConfigError, match="dropout: 1.0: .*less than 1"):
        resolve_space([parse_param("dropout=0.0:1.0")], base)
    space, notes = resolve_space([parse_param("lr=0.01:0.1")], base)
    assert space["lr"].low == base.lr and "widened" in notes[0]


def test_tune_refuses_an_unknown_metric_in_one_line(tmp_path, holdout_store) -> None:
    store = copy_store(holdout_store, tmp_path / "store")
    res = invoke("tune", "--store", store, "--trials", "1", "--set", "train.epochs=1",
                 "--metric", "ndcg@7", "--out", tmp_path / "x.toml")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: --metric ndcg@7: fit reports no such validation")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.toml").exists()


def test_a_space_file_replaces_the_default_space(tmp_path) -> None:
    path = tmp_path / "space.toml"
    path.write_text('dim = [32, 64]\nlr = "1e-4:1e-2:log"\n'
                    '[temperature]\nlow = 0.05\nhigh = 0.4\nlog = true\n')
    assert load_space(path) == [Param("dim", choices=(32, 64)), Param("lr", 1e-4, 1e-2, True),
                                Param("temperature", 0.05, 0.4, True)]
    path.write_text("dim = 3\n")
    with pytest.raises(ConfigError, match="space file .*: dim: expected a list"):
        load_space(path)
