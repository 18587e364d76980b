"""Retrieval alone against retrieval + ranking (docs/ranking.md), side by side in one run.

On MovieLens-100K (each protocol split from ``../shared/protocol/ml100k_split.py``; scored
by the shared ``evaluate.py``) and on the synthetic set: one store, one ``unirec fit`` with
the defaults (plus the ``rating`` head on MovieLens, whose interaction types are
``rating_N``: the bench copies ``train.json`` with a ``rating`` field, under ``--work``,
never into the repository), then every user's top-10 from the same fitted model with
``stage="retrieve"`` and ``stage="rank"`` (on the mixed protocol also ``new_parity``:
re-ranking must not bury the new items). Also the recommend p50 in process with ranking
over 200 candidates against retrieval alone, and the CLI process time of each.

Usage: python -m bench.rank [--splits DIR] [--protocol temporal ...] [--work DIR] [--quick]
       [--no-synthetic] [--set train.x=y ...]; prints the table and writes
       ``bench/results/rank.json``. ``make bench`` runs it as the ``rank`` step.
"""

from __future__ import annotations

import argparse
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
from bench.quality_ml100k import recommend

ROOT = Path(__file__).resolve().parent.parent
# the mixed protocol's new-item figures (``evaluate.py --new-items``): re-ranking must not
# bury the items no training interaction mentions (docs/ranking.md)
NEW_ITEMS = ("new_parity", "new_recall@10", "new_share_of_recs")
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
                                                               "best_epoch", "validation",
                                                               "rescore")}}
    # rank: the whole stage forced on; auto: what fit kept of it, as a user is served
    for stage in ("retrieve", "rank", "auto"):
        recs = work / f"recs_{stage}.csv"
        recommend(store, split, recs, stage=stage)
        got = protocol_evaluate(split, recs)
        out[stage] = {k: got[k] for k in ("recall@10", "ndcg@10", "hr@10", "coverage",
                                          *NEW_ITEMS) if k in got}
    base, ranked = out["retrieve"]["ndcg@10"], out["rank"]["ndcg@10"]
    out["ndcg_gain_relative"] = round(ranked / base - 1, 4)
    out["served_gain_relative"] = round(out["auto"]["ndcg@10"] / base - 1, 4)
    out["target_gain_relative"] = 0.05
    out["val_rating_rmse"] = meta["validation"].get("val_rating_rmse")
    out["epochs"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                     for r in _rank_rows(store)]
    out.update(latency(store))
    return out


def run_synthetic(work: Path, sets: list[str]) -> dict[str, Any]:
    data = work / "synthetic"
    shutil.rmtree(data, ignore_errors=True)
    _unirec("datasets", "synthetic", "--users", "1000", "--items", "500", "--interactions",
            "20000", "--out", str(data))
    _unirec("featurize", str(data / "data.json"), "--store", str(data / "store"))
    _unirec("fit", "--store", str(data / "store"), *sets)
    out = subprocess.run([sys.executable, "-m", "unirec", "evaluate", "--store",
                          str(data / "store"), "--format", "json"], env=ENV, check=True,
                         capture_output=True, text=True)
    got = json.loads(out.stdout)
    return {k: v for k, v in got.items() if k.startswith(("retrieve_", "rank_", "stage"))}


def run(quick: bool = False, splits: Path | None = None, work: Path | None = None,
        protocols: list[str] | None = None, sets: list[str] | None = None,
        synthetic: bool = True) -> dict[str, Any]:
    """The step (``bench/run.py``'s ``rank``): ML-100K protocols (temporal; quick: temporal
    with 2 retrieval epochs) from ``splits``, else written from the data
    (``quality_ml100k.find_data``), then the synthetic set."""
    import tempfile

    from bench import quality_ml100k as qm

    sets = list(sets or []) + (["--set", "train.epochs=2"] if quick else [])
    protocols = protocols or (["temporal"] if quick else ["temporal", "mixed"])
    with tempfile.TemporaryDirectory(prefix="unirec-rank-") as tmp:
        work = work or Path(tmp)
        results: dict[str, Any] = {"benchmark": "rank", "protocols": {}}
        if splits is None:
            data = qm.find_data()
            if data is None:
                results["skipped_ml100k"] = "MovieLens-100K not found (set UNIREC_ML100K)"
            else:
                splits = work / "splits"
                qm.write_splits(data, splits)
        for protocol in protocols if splits is not None else []:
            if not (splits / protocol / "train.json").is_file():
                continue
            got = run_ml100k(splits / protocol, work / protocol, sets)
            results["protocols"][protocol] = got
            print(protocol, json.dumps({k: v for k, v in got.items() if k != "epochs"}),
                  flush=True)
        if synthetic:
            results["synthetic"] = run_synthetic(work, sets)
            print("synthetic", json.dumps(results["synthetic"]), flush=True)
    return results


def markdown(result: dict[str, Any]) -> str:
    """Retrieval alone against retrieval + ranking, per protocol, and serving cost."""
    lines = ["Retrieval alone and retrieval + ranking from the same `unirec fit` (defaults, "
             "plus the `rating` head on MovieLens), top-10 scored by the shared protocol's "
             "`evaluate.py` (`python -m bench.rank`; docs/ranking.md). Target: +5% relative "
             "NDCG@10 on the temporal protocol.", "",
             "\"rank\" is the whole stage forced on (`--stage rank`), \"auto\" what fit kept of it "
             "(served by default); kept: the interaction model / the rescoring model "
             "(`train.rank.rescore`).", "",
             "| data | stage | Recall@10 | NDCG@10 | HR@10 | gain NDCG | new_parity | "
             "kept | val rating RMSE |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result.get("protocols", {}).items():
        for stage in ("retrieve", "rank", "auto"):
            if stage not in r:
                continue
            m = r[stage]
            key = {"rank": "ndcg_gain_relative", "auto": "served_gain_relative"}.get(stage)
            gain = f"{100 * r[key]:+.1f}%" if key in r else ""
            rescore = (r["ranker"].get("rescore") or {}).get("active")
            kept = f"{r['ranker']['active']} / {rescore}" if stage == "auto" else ""
            rmse = r.get("val_rating_rmse") if stage == "rank" else None
            parity = f"{m['new_parity']:.3f}" if "new_parity" in m else ""
            lines.append(f"| ML-100K {name} | {stage} | {m['recall@10']:.4f} | "
                         f"{m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {gain} | {parity} | {kept} | "
                         f"{'' if rmse is None else f'{rmse:.3f}'} |")
    syn = result.get("synthetic")
    if syn and "rank_ndcg@10" in syn:
        gain = syn["rank_ndcg@10"] / syn["retrieve_ndcg@10"] - 1
        lines.append(f"| synthetic (test split) | retrieve | {syn['retrieve_recall@10']:.4f} | "
                     f"{syn['retrieve_ndcg@10']:.4f} | | | | | |")
        lines.append(f"| synthetic (test split) | rank | {syn['rank_recall@10']:.4f} | "
                     f"{syn['rank_ndcg@10']:.4f} | | {100 * gain:+.1f}% | | "
                     f"{syn.get('stage') == 'rank'} | |")
    lat = [(n, r) for n, r in result.get("protocols", {}).items() if "recommend_p50_ms_rank"
           in r]
    if lat:
        lines += ["", "| data | recommend p50 in process, retrieve / rank over 200 | CLI "
                  "process, retrieve / rank |", "|---|---|---|"]
        for n, r in lat:
            lines.append(f"| ML-100K {n} | {r['recommend_p50_ms_retrieve']} ms / "
                         f"{r['recommend_p50_ms_rank']} ms | {r['cli_process_s_retrieve']} s /"
                         f" {r['cli_process_s_rank']} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=Path, default=None, help="protocol splits "
                    "(ml100k_split.py --out); default: written from the data")
    ap.add_argument("--protocol", action="append", default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sets = [x for s in args.sets for x in ("--set", s)]
    results = run(args.quick, args.splits, args.work, args.protocol, sets,
                  not args.no_synthetic)
    path = ROOT / "bench" / "results" / "rank.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
