"""Featurize on Spark against DuckDB: wall time and peak memory per process role.

Why: issue #19 asks what ``--engine spark`` costs on one machine against the default
DuckDB engine, with the peak memory of the driver and the executors, and for the evidence
behind any claim about scaling by executors. One machine cannot show a cluster's scaling;
what it can show honestly is ``local[1]`` against ``local[2]`` (one and two executor
threads in one JVM) on the same input, with the load from other processes recorded.

Per size: ``synthesize(*default_shape(n), seed=0)`` without text and images (the point is
the plan, not a text encoder: embeddings cost the same model time on either engine), as a
Parquet folder. Each of ``duckdb``, ``spark local[1]``, ``spark local[2]`` featurizes it
into a fresh store, as a child process. Memory is polled (10 Hz) over the child's process
tree and split by role: ``driver`` (the unirec Python process), ``jvm`` (Spark's driver and,
in local mode, its executors: one JVM), ``workers`` (the Python workers the JVM forks to run
the per-partition validation). Wall seconds and interactions/s come with ``others_cores``,
the CPU other processes used meanwhile (a 2-core machine shared with other work).

Usage: python -m bench.featurize_spark --sizes 1000000[,10000000] [--engines duckdb,...]
       [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.harness import _busy_s, environment, save_results
from unirec.datasets import default_shape, synthesize, write_folder

UNIREC = Path(sys.executable).parent / "unirec"
TITLE = "featurize --engine spark against duckdb (local[1], local[2]), memory per role"
ENGINES = {"duckdb": [], "spark local[1]": ["--engine", "spark", "--spark-master", "local[1]"],
           "spark local[2]": ["--engine", "spark", "--spark-master", "local[2]"]}


def _role(p: psutil.Process, root: int) -> str:
    """driver (the unirec process), jvm (Spark's driver + local executors), workers (the
    Python processes the JVM forks for per-partition work), other (launcher scripts)."""
    if p.pid == root:
        return "driver"
    cmd = " ".join(p.cmdline()[:4])
    if "java" in cmd.split(" ")[0]:
        return "jvm"
    return "workers" if "pyspark" in cmd else "other"


def measure_roles(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, rc, and peak RSS (MB) per role and of the whole tree."""
    start, busy0 = time.perf_counter(), _busy_s()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    peaks: dict[str, float] = {}
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = [root]
        now: dict[str, float] = {}
        for p in tree:  # one process leaving (a Python worker, say) must not void the poll
            try:
                role, rss = _role(p, proc.pid), p.memory_info().rss / 2**20
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
            now[role] = now.get(role, 0.0) + rss
        now["total"] = sum(now.values())
        for k, v in now.items():
            peaks[k] = max(peaks.get(k, 0.0), v)
        if time.perf_counter() - start > timeout_s:
            for p in [*root.children(recursive=True), root]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(0.1)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    own = sum(cpu.values())
    return {"wall_s": round(wall, 2), "rc": proc.returncode,
            "peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()},
            "others_cores": round(max(0.0, _busy_s() - busy0 - own) / wall, 2),
            "tail": "\n".join(out.splitlines()[-3:])}


def run(sizes: list[int], timeout_s: float = 3600, engines: list[str] | None = None
        ) -> dict[str, Any]:
    """Each size featurized by each of ``engines`` (labels of ENGINES; default all)."""
    results: dict[str, Any] = {"title": TITLE, "environment": environment(), "sizes": {}}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-spark-", dir=os.environ.get("TMPDIR")
                                         ) as tmp:
            work = Path(tmp)
            data = synthesize(*default_shape(n), seed=0)
            data = dataclasses.replace(data, items=data.items.drop("text"))
            write_folder(data, work / "in", fmt="parquet")
            del data
            per: dict[str, Any] = {}
            for label, extra in ENGINES.items():
                if engines and label not in engines:
                    continue
                store = work / ("store-" + "".join(c for c in label if c.isalnum()))
                r = measure_roles([str(UNIREC), "featurize", str(work / "in"), "--store",
                                   str(store), *extra], timeout_s)
                if r["rc"] == 0:
                    r["interactions_per_s"] = round(n / r["wall_s"])
                    r.pop("tail")
                per[label] = r
                print(f"  {n:>11,} {label:<15} {r['wall_s']:8.1f} s rc={r['rc']} "
                      f"peak={r['peak_rss_mb']} others={r['others_cores']}",
                      file=sys.stderr, flush=True)
            results["sizes"][str(n)] = per
    return results


def markdown(results: dict[str, Any]) -> str:
    rows = ["| interactions | engine | wall s | interactions/s | peak MB: driver | JVM "
            "(driver+executors) | Python workers | total | others' cores |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n, per in results["sizes"].items():
        for label, r in per.items():
            p = r["peak_rss_mb"]
            rows.append(f"| {int(n):,} | {label} | {r['wall_s']:.1f} | "
                        f"{r.get('interactions_per_s', 'failed')} | {p.get('driver', 0):,.0f} | "
                        f"{p.get('jvm', 0):,.0f} | {p.get('workers', 0):,.0f} | "
                        f"{p.get('total', 0):,.0f} | {r['others_cores']} |")
    return "\n".join(rows) + "\n\n" + scaling(results) + "\n"


def scaling(results: dict[str, Any]) -> str:
    """The scaling paragraph, from the local[1] / local[2] ratio measured here."""
    notes = []
    for n, per in results["sizes"].items():
        one, two = per.get("spark local[1]", {}), per.get("spark local[2]", {})
        duck = per.get("duckdb", {})
        if one.get("rc") == 0 and two.get("rc") == 0:
            notes.append(f"{int(n):,}: local[2] runs in {two['wall_s'] / one['wall_s']:.2f}x "
                         f"the time of local[1] (others used {two['others_cores']} cores), "
                         f"and in {two['wall_s'] / duck['wall_s']:.1f}x DuckDB's"
                         if duck.get("rc") == 0 else "")
    return (
        "Scaling. The Spark plan is partition-parallel except the driver's share: the "
        "validation passes, split, ranks, the training-window selections, embeddings and "
        "shards run per partition, while the entity-sized compile and statistics, the "
        "tensors and loading Spark's Parquet into features.duckdb run on the driver, as on "
        "the DuckDB engine. Executors therefore "
        "divide the first part and leave the second; on a 2-core machine shared with other "
        "work two executor threads cannot show more than 2x, and the JVM, the Python "
        "workers and the driver compete for the same cores. Measured here: "
        + ("; ".join(x for x in notes if x) or "no complete pair") + ".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--engines", default="", help="comma-separated labels of ENGINES to run "
                    "(e.g. 'duckdb,spark local[2]': a 10M local[1] run takes most of an hour "
                    "here); default all")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        sys.exit(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    results = run([int(s) for s in args.sizes.split(",")], args.timeout, engines)
    path = save_results(results, "featurize-spark", args.out)
    print(markdown(results))
    print(json.dumps({"saved": str(path)}))


if __name__ == "__main__":
    main()
