"""Incremental updates (docs/incremental.md): ``featurize --append`` + ``fit --warm-start``
against a full rebuild, on MovieLens-100K and at 1M synthetic interactions.

MovieLens-100K, temporal protocol (PROTOCOL.md): the training interactions are cut by
time; the first 80% (and the users and items they name) are featurized and fitted, the
last 20% (with the remaining records) are appended and the model warm-started. The full
refit featurizes and fits all the training interactions at once. Both models are scored on
the protocol's test set with its ``evaluate.py``; the issue's targets: the warm start takes
at most 25% of the full fit's time and its NDCG@10 is within 0.005 of the full fit's.

Append throughput: ``synthesize(*default_shape(1M))``, cut at 90% of the interactions by
time; the last 10% appended to the store of the first 90%, against one featurize of all of
it (into a copy of that store, so both reuse the same embedding cache). An append
re-compiles the store's raw tables with the new records (``unirec.featurize.append``), so
its cost grows with the whole store, not with the append: both rates are reported.

Usage: python -m bench.incremental [--quick] [--work DIR] [--only ml100k,append]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from bench.harness import measure, save_results
from bench.quality_ml100k import evaluate, find_data, recommend, write_splits
from unirec.datasets import default_shape, synthesize, write_folder

# the protocol's splits (ml100k_split.py's --out); written under the work folder when absent
SPLITS = Path(os.environ.get("UNIREC_SPLITS", "/work/scratch/splits"))
TARGETS = {"warm_over_full_fit": 0.25, "ndcg_gap": 0.005}


def _unirec(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "unirec", *map(str, args)]


def _run(cmd: list[str], what: str) -> dict[str, Any]:
    """One measured child; its wall seconds and peak RSS, or an error naming ``what``."""
    run = measure(cmd)
    if run.rc != 0:
        raise RuntimeError(f"{what} failed ({run.killed or run.rc}):\n{run.tail}")
    return {"s": run.wall_s, "peak_mb": run.peak_rss_mb, "cpu_s": run.cpu_s,
            "others_cores": run.others_cores}


def _cut(frames: dict[str, pl.DataFrame], share: float
         ) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """(A, B): A the first ``share`` of interactions by time with the users and items they
    name; B the later interactions and every other record."""
    inter = frames["interactions"].sort("timestamp", "user_id", "item_id", maintain_order=True)
    n_a = int(len(inter) * share)
    early, late = inter.head(n_a), inter.slice(n_a)
    users, items = frames["user_data"], frames["item_data"]
    in_a_users = users["user_id"].is_in(early["user_id"].unique().implode())
    in_a_items = items["item_id"].is_in(early["item_id"].unique().implode())
    return ({"user_data": users.filter(in_a_users), "item_data": items.filter(in_a_items),
             "interactions": early},
            {"user_data": users.filter(~in_a_users), "item_data": items.filter(~in_a_items),
             "interactions": late})


def _write_doc(frames: dict[str, pl.DataFrame], path: Path) -> Path:
    path.write_text(json.dumps({k: v.to_dicts() for k, v in frames.items()}))
    return path


def _score(store: Path, split: Path) -> dict[str, float]:
    recs = store.parent / f"{store.name}-recs.csv"
    # retrieval alone, both sides alike: a warm start trains no rescoring model
    # (train.rank.rescore), so the served lists would compare two different stages
    recommend(store, split, recs, stage=None)
    m = evaluate(split, recs)
    return {k: round(m[k], 4) for k in ("recall@10", "ndcg@10", "hr@10") if k in m}


def ml100k(work: Path, quick: bool) -> dict[str, Any]:
    """Full refit against append + warm start on the temporal protocol."""
    split = SPLITS / "temporal"
    if not (split / "train.json").is_file():
        data = find_data()
        if data is None:
            return {"skipped": "no MovieLens-100K (UNIREC_ML100K) and no splits (UNIREC_SPLITS)"}
        write_splits(data, work / "splits")
        split = work / "splits" / "temporal"
    doc = json.loads((split / "train.json").read_text())
    frames = {k: pl.DataFrame(v, infer_schema_length=None) for k, v in doc.items()}
    a, b = _cut(frames, 0.8)
    fit = ["--set", "train.epochs=2", "--set", "train.warm_start.epochs=1"] if quick else []
    first, later = _write_doc(a, work / "a.json"), _write_doc(b, work / "b.json")
    out: dict[str, Any] = {"interactions": {"first": len(a["interactions"]),
                                            "appended": len(b["interactions"])},
                           "records_appended": {"users": len(b["user_data"]),
                                                "items": len(b["item_data"])}}
    stores = {name: work / name for name in ("first", "warm", "full")}
    out["featurize_first"] = _run(_unirec("featurize", first, "--store", stores["first"],
                                          "--split", "none"), "featurize A")
    out["fit_first"] = _run(_unirec("fit", "--store", stores["first"], *fit), "fit A")
    for name in ("warm", "full"):  # both start from A's store: the same title cache
        shutil.copytree(stores["first"], stores[name])
    out["append"] = _run(_unirec("featurize", "--append", later, "--store", stores["warm"]),
                         "append B")
    out["fit_warm"] = _run(_unirec("fit", "--store", stores["warm"], "--warm-start", *fit),
                           "fit --warm-start")
    out["featurize_full"] = _run(_unirec("featurize", split / "train.json", "--store",
                                         stores["full"], "--split", "none"), "featurize all")
    out["fit_full"] = _run(_unirec("fit", "--store", stores["full"], *fit), "fit all")
    out["quality"] = {name: _score(store, split) for name, store in stores.items()}
    for name in ("warm", "full"):
        cfg = json.loads((stores[name] / "model" / "config.json").read_text())["summary"]
        out[f"epochs_{name}"] = cfg["epochs"]
    out["warm_over_full_fit"] = round(out["fit_warm"]["s"] / out["fit_full"]["s"], 3)
    # CPU seconds: what the children spent themselves, less moved by a busy machine
    out["warm_over_full_fit_cpu"] = round(out["fit_warm"]["cpu_s"] / out["fit_full"]["cpu_s"], 3)
    out["warm_over_full_total"] = round(
        (out["append"]["s"] + out["fit_warm"]["s"])
        / (out["featurize_full"]["s"] + out["fit_full"]["s"]), 3)
    out["ndcg_gap"] = round(out["quality"]["full"]["ndcg@10"]
                            - out["quality"]["warm"]["ndcg@10"], 4)
    out["targets"] = TARGETS
    return out


def append_throughput(n: int, work: Path) -> dict[str, Any]:
    """Append the last 10% of ``n`` synthetic interactions to the store of the first 90%."""
    data = synthesize(*default_shape(n), seed=0)
    frames = data.frames()
    inter = frames["interactions"].sort("timestamp", maintain_order=True)
    n_a = int(len(inter) * 0.9)
    a = {**frames, "interactions": inter.head(n_a)}
    b = {"user_data": frames["user_data"].head(0), "item_data": frames["item_data"].head(0),
         "interactions": inter.slice(n_a)}
    for name, part in (("a", a), ("b", b), ("all", frames)):
        write_folder(part, work / name, "parquet")
    store, full = work / "store", work / "full"
    first = _run(_unirec("featurize", work / "a", "--store", store), "featurize A")
    shutil.copytree(store, full)
    appended = _run(_unirec("featurize", "--append", work / "b", "--store", store), "append")
    whole = _run(_unirec("featurize", work / "all", "--store", full), "featurize all")
    n_b = len(b["interactions"])
    return {"n": n, "appended": n_b, "featurize_first": first, "append": appended,
            "featurize_all": whole,
            "appended_per_s": round(n_b / appended["s"]),
            "store_interactions_per_s": round(n / appended["s"]),
            "append_over_featurize_all": round(appended["s"] / whole["s"], 3)}


def run(quick: bool, work: Path | None = None, only: tuple[str, ...] = ("ml100k", "append")
        ) -> dict[str, Any]:
    """Both measurements (quick: ML-100K with 2 + 1 epochs, throughput at 100k)."""
    root = Path(tempfile.mkdtemp(prefix="unirec-incremental-", dir=work))
    out: dict[str, Any] = {"benchmark": "incremental"}
    try:
        if "ml100k" in only:
            (root / "ml").mkdir()
            out["ml100k"] = ml100k(root / "ml", quick)
        if "append" in only:
            (root / "syn").mkdir()
            out["append"] = append_throughput(100_000 if quick else 1_000_000, root / "syn")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    """The docs section: the two comparisons, side by side."""
    lines = []
    ml = report.get("ml100k", {})
    if "skipped" in ml:
        lines.append(f"MovieLens-100K skipped: {ml['skipped']}.")
    elif ml:
        q = ml["quality"]
        lines += [
            "MovieLens-100K temporal: first 80% of the training interactions by time, then "
            f"{ml['interactions']['appended']:,} appended ({ml['records_appended']['users']} "
            f"new users, {ml['records_appended']['items']} new items).", "",
            "| | featurize / append s | fit s | epochs | NDCG@10 | Recall@10 | HR@10 |",
            "|---|---|---|---|---|---|---|",
            f"| first 80% (stale model) | {ml['featurize_first']['s']:.1f} | "
            f"{ml['fit_first']['s']:.1f} | | {q['first']['ndcg@10']:.4f} | "
            f"{q['first']['recall@10']:.4f} | {q['first']['hr@10']:.4f} |",
            f"| append + warm start | {ml['append']['s']:.1f} | {ml['fit_warm']['s']:.1f} | "
            f"{ml['epochs_warm']} | {q['warm']['ndcg@10']:.4f} | {q['warm']['recall@10']:.4f} "
            f"| {q['warm']['hr@10']:.4f} |",
            f"| full refit | {ml['featurize_full']['s']:.1f} | {ml['fit_full']['s']:.1f} | "
            f"{ml['epochs_full']} | {q['full']['ndcg@10']:.4f} | {q['full']['recall@10']:.4f} "
            f"| {q['full']['hr@10']:.4f} |", "",
            f"Warm-start fit / full fit: **{ml['warm_over_full_fit']:.2f}** wall, "
            f"{ml['warm_over_full_fit_cpu']:.2f} CPU seconds (target ≤ "
            f"{TARGETS['warm_over_full_fit']}); append + warm start / featurize + fit: "
            f"{ml['warm_over_full_total']:.2f}. NDCG@10 gap (full − warm): "
            f"**{ml['ndcg_gap']:+.4f}** (target ≤ {TARGETS['ndcg_gap']}).", ""]
    ap = report.get("append")
    if ap:
        lines += [
            f"Append at {ap['n']:,} synthetic interactions ({ap['appended']:,} appended, "
            "parquet folders):", "",
            "| | s | peak MB |", "|---|---|---|",
            f"| featurize first 90% | {ap['featurize_first']['s']:.1f} | "
            f"{ap['featurize_first']['peak_mb']:,.0f} |",
            f"| append last 10% | {ap['append']['s']:.1f} | {ap['append']['peak_mb']:,.0f} |",
            f"| featurize all (same cache) | {ap['featurize_all']['s']:.1f} | "
            f"{ap['featurize_all']['peak_mb']:,.0f} |", "",
            f"Append: {ap['appended_per_s']:,} appended interactions/s "
            f"({ap['store_interactions_per_s']:,} store interactions/s: an append re-compiles "
            f"the store); append / featurize all = {ap['append_over_featurize_all']:.2f}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder")
    parser.add_argument("--only", default="ml100k,append")
    args = parser.parse_args(argv)
    report = run(args.quick, args.work, tuple(args.only.split(",")))
    print(markdown(report))
    print(f"saved: {save_results(report, 'incremental')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
