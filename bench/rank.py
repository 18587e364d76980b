"""Retrieval alone against retrieval + ranking (docs/ranking.md), side by side in one run.

On MovieLens-100K (each protocol split from ``../shared/protocol/ml100k_split.py``; scored
by the shared ``evaluate.py``) and on the synthetic set: one store, one ``unirec fit`` with
the defaults (plus the ``rating`` head on MovieLens, whose interaction types are
``rating_N``: the bench copies ``train.json`` with a ``rating`` field, under ``--work``,
never into the repository), then every user's top-10 from the same fitted model with
``stage="retrieve"`` and ``stage="rank"``. Also the recommend p50 in process with ranking
over 200 candidates against retrieval alone, and the CLI process time of each.

Usage: python -m bench.rank [--splits DIR] [--protocol temporal] [--work DIR]
       [--set train.x=y ...]; prints and writes ``bench/results/rank.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality_ml100k import evaluate as protocol_evaluate

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _unirec(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "unirec", *args], env=ENV, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def with_ratings(src: Path, dst: Path) -> None:
    """``train.json`` with ``rating`` = N of ``interaction_type`` "rating_N"."""
    doc = json.loads(src.read_text())
    for row in doc["interactions"]:
        kind = row.get("interaction_type") or ""
        if kind.startswith("rating_"):
            row["rating"] = float(kind.split("_", 1)[1])
    dst.write_text(json.dumps(doc))


def write_recs(store: Path, stage: str, out: Path) -> None:
    import unirec

    rec = unirec.Recommender.load(store)
    users = rec.user_ids(np.arange(1, rec.n_users + 1))
    ids, _ = unirec.recommend(list(users), 10, store=store, stage=stage)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rank"])
        for u, row in zip(users, ids, strict=True):
            for r, i in enumerate(row, start=1):
                w.writerow([int(u), int(i), r])


def latency(store: Path, n: int = 200) -> dict[str, Any]:
    """p50 of one known user's recommend in process, and of the whole CLI process."""
    import unirec

    rec = unirec.Recommender.load(store)
    users = rec.user_ids(np.arange(1, min(rec.n_users, n) + 1))
    out: dict[str, Any] = {}
    for stage in ("retrieve", "rank"):
        unirec.recommend(users[0], 10, store=store, stage=stage)  # warm
        times = []
        for u in users:
            t0 = time.perf_counter()
            unirec.recommend(u, 10, store=store, stage=stage)
            times.append(time.perf_counter() - t0)
        out[f"recommend_p50_ms_{stage}"] = round(1e3 * statistics.median(times), 3)
        cli = [_unirec("recommend", "--user", str(users[i]), "--store", str(store), "--stage",
                       stage) for i in range(5)]
        out[f"cli_process_s_{stage}"] = round(statistics.median(cli), 3)
    return out


def _rank_rows(store: Path) -> list[dict]:
    rows = [json.loads(x) for x in (store / "model" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == "rank"]


def run_ml100k(split: Path, work: Path, sets: list[str]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    with_ratings(split / "train.json", work / "train.json")
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    featurize_s = _unirec("featurize", str(work / "train.json"), "--store", str(store),
                          "--split", "none")
    fit_s = _unirec("fit", "--store", str(store), "--set",
                    'train.rank.heads={"rating": 0.5}', *sets)
    meta = json.loads((store / "model" / "rank" / "rank.json").read_text())
    out: dict[str, Any] = {"featurize_s": round(featurize_s, 1), "fit_s": round(fit_s, 1),
                           "ranker": {k: meta.get(k) for k in ("model", "active",
                                                               "best_epoch", "validation")}}
    for stage in ("retrieve", "rank"):
        recs = work / f"recs_{stage}.csv"
        write_recs(store, stage, recs)
        got = protocol_evaluate(split, recs)
        out[stage] = {k: got[k] for k in ("recall@10", "ndcg@10", "hr@10", "coverage")
                      if k in got}
    base, ranked = out["retrieve"]["ndcg@10"], out["rank"]["ndcg@10"]
    out["ndcg_gain_relative"] = round(ranked / base - 1, 4)
    out["target_gain_relative"] = 0.05
    out["val_rating_rmse"] = meta["validation"].get("val_rating_rmse")
    out["epochs"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                     for r in _rank_rows(store)]
    out.update(latency(store))
    return out


def run_synthetic(work: Path, sets: list[str]) -> dict[str, Any]:
    data = work / "synthetic"
    shutil.rmtree(data, ignore_errors=True)
    _unirec("datasets", "synthetic", "--users", "2000", "--items", "1000", "--interactions",
            "60000", "--out", str(data))
    _unirec("featurize", str(data / "data.json"), "--store", str(data / "store"))
    _unirec("fit", "--store", str(data / "store"), *sets)
    out = subprocess.run([sys.executable, "-m", "unirec", "evaluate", "--store",
                          str(data / "store"), "--format", "json"], env=ENV, check=True,
                         capture_output=True, text=True)
    got = json.loads(out.stdout)
    return {k: v for k, v in got.items() if k.startswith(("retrieve_", "rank_", "stage"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=Path, default=Path("/work/scratch/splits"))
    ap.add_argument("--protocol", action="append", default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/unirec-rank"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--no-synthetic", action="store_true")
    args = ap.parse_args()
    sets = [x for s in args.sets for x in ("--set", s)]
    results: dict[str, Any] = {}
    for protocol in args.protocol or ["temporal"]:
        if not (args.splits / protocol / "train.json").is_file():
            print(f"skipping {protocol}: no {args.splits / protocol / 'train.json'}")
            continue
        results[protocol] = run_ml100k(args.splits / protocol, args.work / protocol, sets)
        print(protocol, json.dumps({k: v for k, v in results[protocol].items()
                                    if k != "epochs"}), flush=True)
    if not args.no_synthetic:
        results["synthetic"] = run_synthetic(args.work, sets)
        print("synthetic", json.dumps(results["synthetic"]), flush=True)
    path = ROOT / "bench" / "results" / "rank.json"
    path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
