"""Featurize, this checkout against an older one, side by side on the same input and machine.

Why: featurize's speed figures move with the load other processes put on the machine, so a
change is judged by ratios measured in one session: the same Parquet input, the same warm
embedding cache, the two code trees run alternately. The older tree is any checkout (e.g.
``git worktree add ../old 46d556d``); each run is ``python -m bench.featurize_stages
featurize INPUT --store S`` started *in* its tree with ``PYTHONPATH`` set to it, so each
side imports only its own ``unirec`` and stamps its own stage boundaries.

Per size: generate the input (as ``bench.featurize`` does), one cold run of this tree to fill
the embedding cache, a copy of that store for the old tree (same cache, so both sides skip
embedding), then ``--runs`` pairs old, new. Reported per side: median wall, interactions/s,
max peak RSS, median seconds per stage, and shard bytes per training/validation sample.

``--plan`` runs both sides as ``featurize --plan`` (read, validate, split, samples, then the
plan; no features or shards), so more alternations fit in the same time when the change is in
those stages.

Usage: python -m bench.featurize_compare --old-tree ../old --sizes 1000000,10000000 [--plan]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.featurize import OFFLINE, STAGES, prepare
from bench.harness import ROOT, environment, measure, save_results

TITLE = "featurize: this tree against an older one, alternating runs, embedding cache warm"


def _run(tree: Path, data: Path, store: Path, extra: list[str], timing: Path,
         limits: dict[str, float]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.featurize_stages", "featurize", str(data),
           "--store", str(store), *extra]
    env = {**OFFLINE, "PYTHONPATH": str(tree), "UNIREC_BENCH_STAGES": str(timing)}
    run = measure(cmd, timeout_s=limits["timeout_s"], max_rss_mb=limits["max_rss_mb"],
                  env=env, cwd=tree)
    out: dict[str, Any] = {k: v for k, v in asdict(run).items() if k != "tail" or run.rc}
    if timing.exists():
        out["stages_s"] = json.loads(timing.read_text())["seconds"]
        timing.unlink()
    shards = list((store / "shards").glob("*.tar"))
    if run.rc == 0 and shards:
        report = json.loads((store / "report.json").read_text())
        n = sum(report["samples"]["counts"][s] for s in ("train", "val"))
        out["shard_bytes_per_sample"] = round(sum(p.stat().st_size for p in shards) / n, 1)
    print(f"  {tree.name:<8} {run.wall_s:8.2f} s {run.peak_rss_mb:8.1f} MB rc={run.rc} "
          f"others={run.others_cores} cores", file=sys.stderr, flush=True)
    return out


def _side(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"failed": runs[-1].get("killed") or runs[-1].get("tail", "")[-300:]}
    wall = statistics.median(r["wall_s"] for r in ok)
    return {"wall_s": round(wall, 2), "interactions_per_s": round(n / wall),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in ok), 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "stages_s": {k: round(statistics.median(r["stages_s"].get(k, 0.0) for r in ok), 2)
                         for k in STAGES},
            "shard_bytes_per_sample": ok[-1].get("shard_bytes_per_sample"),
            "others_cores_max": max(r["others_cores"] for r in ok), "runs": runs}


def compare(old: Path, sizes: list[int], runs: int, limits: dict[str, float],
            memory_limit: str | None, seed_store: Path | None = None,
            plan_only: bool = False, inputs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Alternate old and new on each size; the per-size results as written to JSON.
    ``inputs_dir`` holds inputs generated before (``DIR/<n>/in-parquet``, written there
    on first use), so a large size is generated once across invocations."""
    results = []
    for n in sizes:
        extra = ["--set", f"ingest.memory_limit={memory_limit}"] if memory_limit else []
        timed = [*extra, "--plan"] if plan_only else extra
        with tempfile.TemporaryDirectory(prefix="unirec-bench-compare-") as tmp:
            work = Path(tmp)
            kept = inputs_dir / str(n) if inputs_dir else work
            kept.mkdir(parents=True, exist_ok=True)
            if (kept / "in-parquet").is_dir():
                inputs, meta = {"parquet": kept / "in-parquet"}, {"input": "reused"}
            else:
                inputs, meta = prepare(n, kept, 0, 0)
            data, new_store, old_store = inputs["parquet"], work / "new", work / "old"
            if seed_store is not None:  # start from its embedding cache (fewer titles to embed)
                shutil.copytree(seed_store, new_store)
            cold = _run(ROOT, data, new_store, extra, work / "t.json", limits)
            if cold["rc"]:
                results.append({"interactions": n, "failed": cold})
                continue
            shutil.copytree(new_store, old_store)  # the same warm cache for the old tree
            sides: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
            for _ in range(runs):
                sides["old"].append(_run(old, data, old_store, timed, work / "t.json", limits))
                sides["new"].append(_run(ROOT, data, new_store, timed, work / "t.json", limits))
            results.append({"interactions": n, **meta, "extra_args": timed,
                            "old": _side(sides["old"], n), "new": _side(sides["new"], n)})
    return results


def markdown(report: dict[str, Any]) -> str:
    """Throughput, memory and stage seconds per side, with old / new ratios."""
    lines = [f"**{TITLE}** — old = `{report['old_commit']}`, new = `{report['new_commit']}`; "
             f"median of {report['runs']} alternating run(s) per side, Parquet input.", "",
             "| interactions | side | wall s | interactions/s | CPU s | peak RSS MB | "
             "shard B/sample | " + " | ".join(STAGES) + " |",
             "|---:|---|" + "---:|" * (5 + len(STAGES))]
    for size in report["sizes"]:
        n = size["interactions"]
        if "failed" in size:
            lines.append(f"| {n:,} | failed | {size['failed']} |")
            continue
        for side in ("old", "new"):
            s = size[side]
            if "failed" in s:
                lines.append(f"| {n:,} | {side} | failed: {s['failed']} |")
                continue
            shard_bytes = "–" if report.get("plan_only") else s["shard_bytes_per_sample"]
            lines.append(f"| {n:,} | {side} | {s['wall_s']:.1f} | {s['interactions_per_s']:,} "
                         f"| {s.get('cpu_s', 0):.1f} | {s['peak_rss_mb']:,.0f} | {shard_bytes} | "
                         + " | ".join(f"{s['stages_s'][k]:.1f}" for k in STAGES) + " |")
        if "failed" not in size["old"] and "failed" not in size["new"]:
            o, w = size["old"], size["new"]
            lines.append(f"| {n:,} | old / new | {o['wall_s'] / w['wall_s']:.2f}× | | "
                         f"{_ratio(o.get('cpu_s'), w.get('cpu_s'))} | "
                         f"{o['peak_rss_mb'] / w['peak_rss_mb']:.2f}× | "
                         f"{_ratio(o['shard_bytes_per_sample'], w['shard_bytes_per_sample'])} | "
                         + " | ".join(_ratio(o['stages_s'][k], w['stages_s'][k])
                                      for k in STAGES) + " |")
    return "\n".join(lines)


def _ratio(old: float | None, new: float | None) -> str:
    return f"{old / new:.1f}×" if old and new else "–"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--old-tree", type=Path, required=True, help="the older checkout")
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--runs", type=int, default=1, help="old/new pairs per size")
    parser.add_argument("--memory-limit", default=None,
                        help="pass --set ingest.memory_limit=VALUE to both sides (e.g. 3GB)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="kill a run above this")
    parser.add_argument("--seed-store", type=Path, default=None,
                        help="a store whose embedding cache the first run starts from")
    parser.add_argument("--plan", action="store_true",
                        help="run both sides as featurize --plan (stages up to samples)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="keep generated inputs under DIR/<n>/ and reuse them next time")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    old = args.old_tree.resolve()
    limits = {"timeout_s": args.timeout, "max_rss_mb": args.max_rss_gb * 1024}
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    env = environment()
    report = {"environment": env, "benchmark": "featurize_compare", "title": TITLE,
              "runs": args.runs, "old_commit": _commit(old), "new_commit": env.get("commit"),
              "plan_only": args.plan,
              "sizes": compare(old, sizes, args.runs, limits, args.memory_limit,
                               args.seed_store, plan_only=args.plan, inputs_dir=args.inputs)}
    report["load_avg_after"] = environment()["load_avg"]
    out = save_results(report, "featurize-compare", args.out)
    print(markdown(report))
    print(f"\nwritten: {out}")
    return 0


def _commit(tree: Path) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, env={**os.environ})
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
