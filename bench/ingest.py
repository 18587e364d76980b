"""Ingest benchmark: read + validate + typed tables, unirec against the naive reader.

Why: PROTOCOL.md ("Speed and scale") asks for unirec's ingest cost next to the peer a user
would otherwise write (``bench/peer_naive_ingest.py``: json.load + pandas, the same checks,
the three frames stored in DuckDB), measured in the same run on the same machine: these
machines are shared and noisy, so ratios hold where absolute seconds do not.

``unirec featurize`` has grown into a whole compiler (splits, samples, vocabularies, text and
image embeddings, tensors, shards), so timing the CLI no longer measures ingestion. By default
the unirec side is ``bench/unirec_ingest.py``, which runs exactly featurize's read + validate +
typed users/items/interactions stage (``unirec.featurize.raw.build_raw_tables``) and nothing
after it; ``bench/featurize.py`` measures the whole compiler. Each side runs in a child
process (see ``bench.harness.measure``), interleaved a, b, a, b, ... on one synthetic document
per size, and both must report the same kept counts.

Usage: python -m bench.ingest --sizes 100000,1000000 [--runs 3] [--out PATH]
       [--unirec-cmd "TEMPLATE with {doc} and {store}"]   (e.g. "unirec featurize {doc}
       --store {store}" to time the whole CLI instead)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Run, environment, last_json, measure, save_results
from unirec.datasets.synthetic import default_shape, synthesize, write_document

PEER = ROOT / "bench" / "peer_naive_ingest.py"
UNIREC_INGEST = ROOT / "bench" / "unirec_ingest.py"
TITLE = "ingest: read + validate + typed tables"


def unirec_missing(template: str | None) -> str | None:
    """Why the unirec side cannot run (None when it can): a clear reason instead of a crash."""
    if template:
        return None
    probe = subprocess.run([sys.executable, "-c", "from unirec.featurize.raw import "
                            "build_raw_tables"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"unirec's ingest stage does not import ({last[0]}): run `make install`"
    return None


def commands(doc: Path, work: Path, template: str | None) -> dict[str, list[str]]:
    """The two sides' command lines, each writing its DuckDB file (or store) under ``work``."""
    unirec = (shlex.split(template.format(doc=doc, store=work / "unirec-store")) if template
              else [sys.executable, str(UNIREC_INGEST), str(doc),
                    "--db", str(work / "unirec.duckdb")])
    return {"unirec": unirec,
            "peer": [sys.executable, str(PEER), str(doc), "--db", str(work / "peer.duckdb")]}


def counts_agree(a: list[Run], b: list[Run]) -> bool | None:
    """Did both sides store the same number of users, items and interactions? None: unknown."""
    sa = {json.dumps((last_json(r.tail) or {}).get("stored"), sort_keys=True) for r in a}
    sb = {json.dumps((last_json(r.tail) or {}).get("stored"), sort_keys=True) for r in b}
    if "null" in sa | sb:
        return None
    return sa == sb and len(sa) == 1


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
            "others_cores_max": max(r.others_cores for r in ok),
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
                for db in ("peer.duckdb", "unirec.duckdb"):
                    (work / db).unlink(missing_ok=True)
                run = measure(cmds[side])
                measured[side].append(run)
                print(f"  {n:>10,} {side:<6} run {i + 1}/{runs}: {run.wall_s:8.2f} s "
                      f"{run.peak_rss_mb:8.1f} MB rc={run.rc} others={run.others_cores} cores "
                      f"load={run.load1}", file=sys.stderr, flush=True)
        for side in sides:
            result[side] = summarize(measured[side], n)
        result["commands"] = {side: shlex.join(cmds[side]) for side in sides}
        if not skip:
            result["counts_agree"] = counts_agree(measured["unirec"], measured["peer"])
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


def markdown(report: dict[str, Any]) -> str:
    """Title, what each side runs, the table, and how busy the machine was meanwhile."""
    sizes = report["sizes"]
    others = [s[side]["others_cores_max"] for s in sizes for side in ("unirec", "peer")
              if "others_cores_max" in s.get(side, {})]
    agree = {s.get("counts_agree") for s in sizes}
    docs = ", ".join(f"{s['doc_mb']:,} MB" for s in sizes)
    return "\n".join([
        f"**{TITLE}** — one JSON document per size ({docs}); unirec: `bench/unirec_ingest.py` "
        "(featurize's `build_raw_tables`), peer: `bench/peer_naive_ingest.py` (json.load + "
        f"pandas, same checks, same DuckDB output); {report['runs']} interleaved runs per side; "
        "ratio = unirec / peer at the median wall and the max peak RSS (below 1: unirec wins).",
        "", table(sizes), "",
        f"Both sides stored the same counts: {'yes' if agree == {True} else agree}. "
        f"Other processes kept up to {max(others, default=0):.2f} cores busy during a run."])


def run(sizes: list[int], runs: int = 3, seed: int = 0,
        template: str | None = None) -> dict[str, Any]:
    """Measure every size; the results as written to JSON (environment added by the caller)."""
    skip = unirec_missing(template)
    if skip:
        print(f"unirec side skipped: {skip}; measuring the peer alone", file=sys.stderr)
    return {"benchmark": "ingest", "title": TITLE, "runs": runs, "seed": seed,
            "sizes": [bench_size(n, runs, skip, template, seed) for n in sizes]}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=TITLE + ", unirec vs naive json.load + pandas")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated interaction counts (default: 100000,1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/ingest-<date>.json)")
    parser.add_argument("--unirec-cmd", default=None,
                        help="command template replacing the default unirec side "
                        "`python bench/unirec_ingest.py {doc}` (placeholders {doc}, {store})")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report = {"environment": environment(),
              **run(sizes, args.runs, args.seed, args.unirec_cmd)}
    out = save_results(report, "ingest", args.out)
    print(markdown(report))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
