"""The ``quality`` step of ``make bench``: unirec's defaults against tuned peers on ML-100K.

Why: PROTOCOL.md asks whether unirec's top-10 lists beat what a user would otherwise pick, with
the peers re-run in the same session and tuned as honestly as unirec. So, in one run:

- the shared ``ml100k_split.py`` writes the three protocols (temporal, cold_item, mixed) and
  ``bench.quality_ml100k``'s carve writes their tuning protocols (cut from train the way test
  is cut from everything; test is never read while tuning);
- **unirec** runs as a user runs it, with its defaults, through the CLI (``unirec featurize``
  then ``unirec fit``, ``bench.quality_ml100k.Pipeline``; its defaults were themselves chosen
  on the tuning carve, with ``python -m bench.quality_ml100k --tune``);
- each **peer** (``bench.peers``) tries its grid on the tuning carve, keeps the point with the
  best tuning NDCG@10 (temporal) or Recall@10 (cold_item), refits on the whole training part
  and is scored on the real test; stochastic peers are the mean of ``SEEDS`` seeds;
- everyone's lists go through the shared ``evaluate.py`` as a child process, unirec's too
  (mixed: with ``--new-items``, so new-item metrics sit beside the warm ones);
- **unirec tuned** (full runs): ``unirec tune`` with ``TUNE_BUDGET`` on the store's own
  validation slice (carved from train by featurize, never test), then ``unirec fit`` with the
  written config, scored like the others.

Quick (``make bench-quick``): temporal only, unirec for 2 epochs, one grid point per peer.
Nothing derived from MovieLens is kept (licence): splits, stores and lists live in a temporary
folder under /tmp; only metrics reach ``bench/results``. Without the data the step says so.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench import peers, quality_report
from bench import quality_ml100k as qm
from bench.harness import measure

SEEDS = 3  # stochastic peers (ALS, LightFM, Random): the mean of this many seeds on test
METRICS = ("recall@10", "ndcg@10", "hr@10", "coverage")
NEW_METRICS = qm.NEW_METRICS  # mixed only
# `unirec tune`'s budget per protocol in full runs: no trial starts after timeout_s.
TUNE_BUDGET = {"trials": 6, "timeout_s": 900}
CHART = "benchmarks-quality.png"  # next to docs/benchmarks.md


class Catalogue:
    """Every user and item of ML-100K in id order, and the items' content as matrices."""

    def __init__(self, data: Path) -> None:
        mod = qm.split_module()
        users, items = mod.load_users(str(data)), mod.load_items(str(data))
        names = mod.load_genre_names(str(data))
        self.user_ids = np.array(sorted(users), np.int64)
        self.item_ids = np.array(sorted(items), np.int64)
        years = sorted({it["year"] for it in items.values() if it["year"]})
        decades = sorted({y[:3] for y in years})
        cols = {**{f"genre={g}": c for c, g in enumerate(names)}}
        cols.update({f"year={y}": len(cols) + c for c, y in enumerate(years)})
        cols.update({f"decade={d}0s": len(cols) + c for c, d in enumerate(decades)})
        rows, feats = [], []
        for r, iid in enumerate(self.item_ids):
            it = items[int(iid)]
            keys = [f"genre={g}" for g in it["genres"]]
            keys += [f"year={it['year']}", f"decade={it['year'][:3]}0s"] if it["year"] else []
            rows += [r] * len(keys)
            feats += [cols[k] for k in keys]
        content = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, feats)),
                                shape=(len(self.item_ids), len(cols)))
        self.genres = content[:, :len(names)].tocsr()  # GenrePop: genres only
        self.content = content  # LightFM: genres, year and decade

    def features(self, name: str) -> sp.csr_matrix:
        return self.genres if name == "GenrePop" else self.content

    def train_matrix(self, split_dir: Path) -> sp.csr_matrix:
        pairs = np.array(sorted(qm._pairs(split_dir / "train.csv")), np.int64).reshape(-1, 2)
        return peers.binary(np.searchsorted(self.user_ids, pairs[:, 0]),
                            np.searchsorted(self.item_ids, pairs[:, 1]),
                            len(self.user_ids), len(self.item_ids))

    def new_items(self, split_dir: Path) -> set[int] | None:
        path = split_dir / "new_items.csv"
        return set(qm._ids(path).tolist()) if path.is_file() else None

    def candidates(self, split_dir: Path) -> np.ndarray | None:
        path = split_dir / "cold_items.csv"
        return np.isin(self.item_ids, qm._ids(path)) if path.is_file() else None

    def write_recs(self, top: np.ndarray, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "item_id", "rank"])
            for u, row in zip(self.user_ids, top, strict=True):
                w.writerows([int(u), int(self.item_ids[c]), rank]
                            for rank, c in enumerate(row, start=1) if c >= 0)


def _evaluator() -> Any:
    """The protocol's ``evaluate.py`` imported, to score tuning trials in process."""
    spec = importlib.util.spec_from_file_location("protocol_evaluate",
                                                  qm.PROTOCOL_DIR / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _fit_top(name: str, params: dict[str, Any], x: sp.csr_matrix, cat: Catalogue,
             cands: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Fit peer ``name`` on ``x``; its top-10 lists and fit seconds."""
    t0 = time.perf_counter()
    model = peers.PEERS[name](**params).fit(x, cat.features(name))
    fit_s = time.perf_counter() - t0
    return peers.top_k(model.scores(x), x, qm.K, cands), fit_s


def tune_peer(name: str, grid: list[dict[str, Any]], split_dir: Path, cat: Catalogue,
              ev: Any) -> dict[str, Any]:
    """Every grid point on the tuning protocol ``split_dir`` (seed 0); the best and all."""
    metric = qm.TARGET_METRIC[split_dir.name]
    x, cands = cat.train_matrix(split_dir), cat.candidates(split_dir)
    test, train = ev.read_pairs(split_dir / "test.csv"), ev.read_pairs(split_dir / "train.csv")
    cand_ids = set(cat.item_ids[cands].tolist()) if cands is not None else None
    new = cat.new_items(split_dir)
    t0, trials = time.perf_counter(), []
    for params in grid:
        top, fit_s = _fit_top(name, params, x, cat, cands)
        recs = {int(u): [int(cat.item_ids[c]) for c in row if c >= 0]
                for u, row in zip(cat.user_ids, top, strict=True)}
        m = ev.evaluate(test, train, recs, qm.K, cand_ids)
        if new is not None:
            m.update(ev.new_item_metrics(test, train, recs, new, qm.K))
        trials.append({"params": params, "fit_s": round(fit_s, 2),
                       **{k: round(m[k], 5) for k in (metric, *NEW_METRICS) if k in m}})
    best = max(trials, key=lambda t: t[metric])  # first of equals: grids list simpler first
    return {"metric": metric, "best": best["params"], "trials": trials,
            "seconds": round(time.perf_counter() - t0, 1)}


def test_peer(name: str, params: dict[str, Any], split_dir: Path, cat: Catalogue,
              work: Path, seeds: int) -> dict[str, Any]:
    """Refit on the protocol's whole train part and score with ``evaluate.py`` (seed mean)."""
    x, cands = cat.train_matrix(split_dir), cat.candidates(split_dir)
    runs = []
    stochastic = peers.PEERS[name].stochastic
    for seed in range(seeds if stochastic else 1):
        top, fit_s = _fit_top(name, {**params, "seed": seed} if stochastic else params, x,
                              cat, cands)
        recs = work / f"{split_dir.name}-{name}-{seed}.csv"
        cat.write_recs(top, recs)
        runs.append({**qm.evaluate(split_dir, recs), "fit_s": fit_s})
    keys = [k for k in (*METRICS, *NEW_METRICS, "fit_s") if k in runs[0]]
    row = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    row.update(train_violations=sum(r["train_violations"] for r in runs), seeds=len(runs))
    if len(runs) > 1:
        row["sd"] = {k: statistics.stdev(r[k] for r in runs) for k in ("recall@10", "ndcg@10")}
    return row


def run_unirec(pipe: qm.Pipeline, split_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """unirec's defaults (plus ``settings``) through the CLI; the row and the whole result."""
    res = pipe.run(split_dir, settings)
    if "error" in res:
        return {"model": "unirec", "error": str(res["error"])[-500:], "settings": settings}
    return {"model": "unirec", "params": settings,
            **{k: res[k] for k in (*METRICS, *NEW_METRICS) if k in res},
            "fit_s": res["featurize_s"] + res["fit_s"], "train_violations":
            res["train_violations"], "seeds": 1, "unirec": res}


def run_tuned(pipe: qm.Pipeline, split_dir: Path, budget: dict[str, Any]) -> dict[str, Any]:
    """``unirec tune`` on the protocol's store (its validation slice, carved from train by
    featurize), then the pipeline with the written config; the row, as ``run_unirec``'s."""
    import tomllib

    base, _ = pipe.featurize(split_dir, {})
    store = pipe.work / "stores" / f"tune-{split_dir.name}"
    out = pipe.work / f"tuned-{split_dir.name}.toml"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(base, store, ignore=shutil.ignore_patterns("model"))
    try:
        run = measure(qm._unirec("tune", "--store", str(store), "--trials",
                                 str(budget["trials"]), "--timeout", str(budget["timeout_s"]),
                                 "--out", str(out), "--format", "csv"),
                      poll_s=0.05, timeout_s=budget["timeout_s"] + pipe.timeout_s, env=pipe.env)
        if run.rc or not out.is_file():
            return {"model": "unirec tuned", "error": (run.killed or run.tail)[-500:]}
        con = duckdb.connect(str(store / "features.duckdb"), read_only=True)
        try:
            trials = con.sql("SELECT * FROM tuning_trials ORDER BY trial").pl().to_dicts()
        finally:
            con.close()
    finally:
        shutil.rmtree(store, ignore_errors=True)
    settings = {f"train.{k}": v for k, v in tomllib.loads(out.read_text())["train"].items()}
    row = run_unirec(pipe, split_dir, settings)
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    row.update(model="unirec tuned", tuning={
        "tool": "unirec tune", "budget": budget, "trials": trials, "seconds": round(run.wall_s, 1),
        "best": {"trial": best["trial"], "val_ndcg@10": best["value"]}})
    return row


def run(quick: bool = False, only: list[str] | None = None, unirec: bool = True
        ) -> dict[str, Any]:
    """The step: every protocol (or ``only`` these), peers tuned then tested, unirec with its
    defaults and (full runs) after ``unirec tune``; ``unirec=False`` runs the peers alone."""
    data = qm.find_data()
    if data is None:
        return {"benchmark": "quality", "skipped": "MovieLens-100K not found (set "
                "UNIREC_ML100K or put it in ../shared/data/ml-100k)"}
    protocols = only or (["temporal"] if quick else list(qm.PROTOCOLS))
    settings = {"train.epochs": 2} if quick else {}
    out: dict[str, Any] = {"benchmark": "quality", "k": qm.K, "targets": qm.TARGETS,
                           "seeds": 1 if quick else SEEDS, "threads": 1, "protocols": {},
                           "unavailable": {}}
    with tempfile.TemporaryDirectory(prefix="unirec-bench-quality-") as tmp:
        work = Path(tmp)
        qm.write_splits(data, work / "splits")
        qm.write_tuning_splits(data, work / "splits", work / "tuning")
        cat, ev = Catalogue(data), _evaluator()
        pipe = qm.Pipeline(work, threads=1, timeout_s=1800)
        for name in protocols:
            t0, rows = time.perf_counter(), []
            with threadpool_limits(1):
                for peer in peers.ON[name]:
                    why = peers.available(peer)
                    if why:
                        out["unavailable"][peer] = why
                        continue
                    tuning = tune_peer(peer, peers.grid(peer, name, quick),
                                       work / "tuning" / name, cat, ev)
                    row = test_peer(peer, tuning["best"], work / "splits" / name, cat, work,
                                    out["seeds"])
                    rows.append({"model": peer, "params": tuning["best"], **row,
                                 "tuning": tuning})
                    _say(name, rows[-1])
            peers_s = time.perf_counter() - t0
            if unirec:
                rows.append(run_unirec(pipe, work / "splits" / name, settings))
                _say(name, rows[-1])
            if unirec and not quick:
                try:
                    rows.append(run_tuned(pipe, work / "splits" / name, TUNE_BUDGET))
                except Exception as err:  # keep the rows measured so far
                    rows.append({"model": "unirec tuned", "error": f"{type(err).__name__}: "
                                 f"{err}"})
                _say(name, rows[-1])
            out["protocols"][name] = {"rows": rows, "peers_seconds": round(peers_s, 1),
                                      "unirec_seconds": round(time.perf_counter() - t0
                                                              - peers_s, 1)}
    return out


def _say(protocol: str, row: dict[str, Any]) -> None:
    text = row.get("error") or " ".join(f"{k}={row[k]:.4f}" for k in (*METRICS, *NEW_METRICS)
                                        if k in row)
    print(f"  [{protocol}] {row['model']} {row.get('params')}: {text}", file=sys.stderr,
          flush=True)


def markdown(result: dict[str, Any]) -> str:
    """The section: how it was measured, one table per protocol, unirec against the targets."""
    return quality_report.markdown(result, CHART)


def figures(result: dict[str, Any], folder: Path) -> list[Path]:
    """The chart of unirec against the peers, next to the docs (nothing if skipped/failed)."""
    if "protocols" not in result or not result["protocols"]:
        return []
    path = folder / CHART
    quality_report.draw(result, path)
    return [path]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.quality [--protocol P ...] [--peers-only] [--quick] [--tune-trials N]
    [--tune-timeout S]``: the step alone,
    printed as its markdown and saved as ``bench/results/quality-step-<date>.json``."""
    import argparse

    from bench.harness import save_results

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--protocol", action="append", choices=qm.PROTOCOLS, default=None)
    p.add_argument("--peers-only", action="store_true", help="skip unirec (minutes per fit)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tune-trials", type=int, default=TUNE_BUDGET["trials"])
    p.add_argument("--tune-timeout", type=float, default=TUNE_BUDGET["timeout_s"],
                   help="seconds after which `unirec tune` starts no trial")
    args = p.parse_args(argv)
    TUNE_BUDGET.update(trials=args.tune_trials, timeout_s=args.tune_timeout)
    result = run(args.quick, args.protocol, unirec=not args.peers_only)
    print(markdown(result))
    print(f"written: {save_results(result, 'quality-step')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
