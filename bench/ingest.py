"""Ingest benchmark: ``unirec featurize`` against the naive json.load + pandas reader.

Why: PROTOCOL.md ("Speed and scale") asks for featurize's wall time and peak memory next to
the peer a user would otherwise write, measured in the same run on the same machine: these
machines are shared and noisy, so ratios hold where absolute seconds do not. Each side runs in
a child process (peak RSS read from the kernel's rusage and from psutil polling of the process
tree), interleaved a, b, a, b, ... on one synthetic document per size.

Usage: python -m bench.ingest --sizes 100000,1000000 [--runs 3] [--out PATH]
       [--unirec-cmd "TEMPLATE with {doc} and {store}"]   (a stand-in for the CLI)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from unirec.datasets.synthetic import default_shape, synthesize, write_document

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "bench" / "peer_naive_ingest.py"
UNIREC = Path(sys.executable).parent / "unirec"


@dataclass
class Run:
    """One child process: what it cost and how it ended."""

    wall_s: float
    peak_rss_mb: float
    rc: int
    tail: str  # last lines of stdout+stderr, kept to explain failures


def measure(cmd: list[str], poll_s: float = 0.01) -> Run:
    """Run ``cmd`` as a child; peak RSS is the larger of rusage maxrss and the polled tree sum."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        polled = 0
        try:
            ps = psutil.Process(proc.pid)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    tree = [ps, *ps.children(recursive=True)]
                    polled = max(polled, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass  # the child is exiting; wait4 collects it on the next pass
                time.sleep(poll_s)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - start
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = "\n".join(out.read().decode(errors="replace").splitlines()[-15:])
    peak = max(polled, usage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux
    return Run(round(wall, 3), round(peak / 2**20, 1), rc, tail)


def unirec_missing(template: str | None) -> str | None:
    """Why the unirec side cannot run (None when it can): a clear reason instead of a crash."""
    if template:
        return None
    if not UNIREC.exists():
        return f"unirec is not installed ({UNIREC} missing): run `make install`"
    probe = subprocess.run([str(UNIREC), "featurize", "--help"], capture_output=True, text=True,
                           timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`unirec featurize --help` failed: {last[0]}"
    return None


def commands(doc: Path, work: Path, template: str | None) -> dict[str, list[str]]:
    """The two sides' command lines, writing their stores under ``work``."""
    store = work / "unirec-store"
    unirec = (shlex.split(template.format(doc=doc, store=store)) if template
              else [str(UNIREC), "featurize", str(doc), "--store", str(store)])
    return {"unirec": unirec,
            "peer": [sys.executable, str(PEER), str(doc), "--db", str(work / "peer.duckdb")]}


def summarize(runs: list[Run], n_interactions: int) -> dict[str, Any]:
    """Min/median wall, throughput at the median, peak RSS over runs; failures spelled out."""
    ok = [r for r in runs if r.rc == 0]
    if len(ok) < len(runs):
        bad = next(r for r in runs if r.rc != 0)
        return {"failed": f"{len(runs) - len(ok)}/{len(runs)} runs failed (rc {bad.rc})",
                "tail": bad.tail, "runs": [asdict(r) for r in runs]}
    median = statistics.median(r.wall_s for r in ok)
    return {"wall_s_min": min(r.wall_s for r in ok), "wall_s_median": median,
            "interactions_per_s": round(n_interactions / median),
            "peak_rss_mb": max(r.peak_rss_mb for r in ok),
            "peak_rss_mb_median": statistics.median(r.peak_rss_mb for r in ok),
            "runs": [asdict(r) for r in runs]}


def bench_size(n: int, runs: int, skip: str | None, template: str | None,
               seed: int) -> dict[str, Any]:
    """Generate one document of ``n`` interactions and measure both sides on it."""
    shape = default_shape(n)
    with tempfile.TemporaryDirectory(prefix="unirec-bench-ingest-") as tmp:
        work, doc = Path(tmp), Path(tmp) / "data.json"
        started = time.perf_counter()
        write_document(synthesize(*shape, seed=seed), doc)
        result: dict[str, Any] = {
            "interactions": n, "users": shape[0], "items": shape[1],
            "doc_mb": round(doc.stat().st_size / 2**20, 1),
            "generate_s": round(time.perf_counter() - started, 2)}
        cmds = commands(doc, work, template)
        sides = ["peer"] if skip else ["unirec", "peer"]
        measured: dict[str, list[Run]] = {side: [] for side in sides}
        for i in range(runs):
            for side in sides:
                shutil.rmtree(work / "unirec-store", ignore_errors=True)  # no warm store/cache
                (work / "peer.duckdb").unlink(missing_ok=True)
                run = measure(cmds[side])
                measured[side].append(run)
                print(f"  {n:>10,} {side:<6} run {i + 1}/{runs}: {run.wall_s:8.2f} s "
                      f"{run.peak_rss_mb:8.1f} MB rc={run.rc}", file=sys.stderr, flush=True)
        for side in sides:
            result[side] = summarize(measured[side], n)
        result["commands"] = {side: shlex.join(cmds[side]) for side in sides}
    if skip:
        result["unirec"] = {"skipped": skip}
    a, b = result.get("unirec", {}), result["peer"]
    if "wall_s_median" in a and "wall_s_median" in b:
        result["ratio_wall"] = round(a["wall_s_median"] / b["wall_s_median"], 3)
        result["ratio_rss"] = round(a["peak_rss_mb"] / b["peak_rss_mb"], 3)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table people read; the JSON holds every run."""
    lines = ["| interactions | side | wall min s | wall median s | interactions/s | peak RSS MB |"
             " wall ratio | RSS ratio |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for side in ("unirec", "peer"):
            s = r.get(side, {})
            ratios = (f"{r.get('ratio_wall', '-')} | {r.get('ratio_rss', '-')}"
                      if side == "unirec" else " | ")
            if "wall_s_median" in s:
                cells = (f"{s['wall_s_min']:.2f} | {s['wall_s_median']:.2f} | "
                         f"{s['interactions_per_s']:,} | {s['peak_rss_mb']:,.0f}")
            else:
                cells = f"{s.get('skipped') or s.get('failed', '?')} | | |"
            lines.append(f"| {r['interactions']:,} | {side} | {cells} | {ratios} |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the numbers were measured on, so results files can be compared honestly."""
    import duckdb
    import pandas
    import polars

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": commit,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "duckdb": duckdb.__version__, "polars": polars.__version__,
            "pandas": pandas.__version__}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description="unirec featurize vs naive json+pandas ingest")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated interaction counts (default: 100000,1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/ingest-<date>.json)")
    parser.add_argument("--unirec-cmd", default=None,
                        help="command template replacing `unirec featurize {doc} --store {store}`")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    skip = unirec_missing(args.unirec_cmd)
    if skip:
        print(f"unirec side skipped: {skip}; measuring the peer alone", file=sys.stderr)
    results = [bench_size(n, args.runs, skip, args.unirec_cmd, args.seed) for n in sizes]
    out = args.out or ROOT / "bench" / "results" / f"ingest-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "ingest", "environment": environment(), "runs": args.runs,
              "sizes": results}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
