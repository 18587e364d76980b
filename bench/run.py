"""The one entry point for ``make bench`` and ``make bench-quick``: named benchmark steps.

Why: PROTOCOL.md wants one command that runs unirec and its peers side by side and writes
``bench/results/*.json`` plus the tables people read. Each benchmark is a ``Step`` (a name, a
title, how to run it in full and quick form, how to render it), so quality on MovieLens,
training and serving join later as further entries of ``STEPS`` and further sections of
``docs/benchmarks.md`` without touching the others.

Full (``make bench``): ingest at 100k and 1M interactions (3 runs), featurize at 1M and 10M,
fit speed, quality on MovieLens-100K (unirec's defaults and `unirec tune` against tuned
peers, three protocols),
serving latency (in process at 100k and 1M items, the CLI, HTTP);
writes ``bench/results/<date>.json`` (merged with any steps already written that day) and
rewrites each step's section of ``docs/benchmarks.md`` between its markers (and a step's
figures, e.g. ``docs/benchmarks-quality.png``).
Quick (``make bench-quick``, ~5 min): ingest at 100k (2 runs), featurize at 100k, a short fit,
quality on the temporal protocol only (unirec for 2 epochs, one point per peer), serving on
a small synthetic store; writes
``bench/results/<date>-quick.json`` and leaves the published figures in docs alone unless
``--docs`` is given.

Usage: python -m bench.run [--quick] [--only ingest,featurize] [--out PATH] [--docs PATH]
       python -m bench.run --render bench/results/<date>.json   (re-render docs and figures,
                                                                  measure nothing)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import featurize, fit_speed, fit_step, incremental, ingest, quality, serve_speed
from bench.harness import ROOT, environment


@dataclass(frozen=True)
class Step:
    """One benchmark: ``run(quick)`` returns its JSON-able results, ``markdown`` renders them;
    ``figures(results, folder)``, if any, draws its charts next to the docs."""

    name: str
    title: str
    run: Callable[[bool], dict[str, Any]]
    markdown: Callable[[dict[str, Any]], str]
    figures: Callable[[dict[str, Any], Path], list[Path]] | None = None


STEPS: list[Step] = [
    Step("ingest", "Ingest: read + validate + typed tables, against json.load + pandas",
         lambda quick: ingest.run([100_000] if quick else [100_000, 1_000_000],
                                  runs=2 if quick else 3),
         ingest.markdown),
    Step("featurize", "Featurize: the whole compiler at scale",
         lambda quick: featurize.run([100_000] if quick else [1_000_000, 10_000_000]),
         featurize.markdown),
    Step("fit", "Fit: training samples/s, eager against torch.compile",
         lambda quick: fit_speed.run(50_000 if quick else 200_000, epochs=2 if quick else 3),
         fit_speed.markdown),
    Step("fit-step", "Fit step: this version against the previous release, interleaved",
         fit_step.for_run, fit_step.markdown),
    Step("quality", "Quality on MovieLens-100K: unirec's defaults against tuned peers",
         quality.run, quality.markdown, quality.figures),
    Step("serve", "Serve: recommend latency and throughput, in process, CLI and HTTP",
         serve_speed.run, serve_speed.markdown),
    Step("incremental", "Incremental: featurize --append and fit --warm-start against a full "
         "rebuild", incremental.run, incremental.markdown),
]

INTRO = """# Benchmarks

`make bench` (`python -m bench.run`) measures unirec on this machine and rewrites the sections
below; `make bench-quick` runs a small version as a smoke test. Raw results, every run
included, are in `bench/results/<date>.json`.

How: every measured program runs as its own child process; wall time is measured around the
whole process (interpreter start and imports included), peak RSS is the larger of the kernel's
`ru_maxrss` (when it is the child's own, not inherited at fork) and a 10 ms poll of the
process tree's resident memory. Inputs come from unirec's
synthetic generator (`unirec.datasets.synthesize(*default_shape(n), seed=0)`: n interactions,
n/20 users, n/50 items). Where a peer exists (a program a user would otherwise write for the
same job) it runs in the same session, interleaved with unirec, and the figures to trust are
the **ratios** unirec / peer: these machines are shared and noisy, absolute seconds are not
stable. Each run also records how many cores *other* processes kept busy meanwhile
(`others' cores`) and the load average, so a slow run can be told from a busy machine.

Quality is measured on MovieLens-100K instead, under the shared protocol, against peers re-run
and tuned in the same session (section "Quality on MovieLens-100K" and
[its chart](benchmarks-quality.png)). Serving is added as a further step of `bench/run.py`.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def _set_section(text: str, name: str, heading: str, body: str) -> str:
    """Replace the block between ``name``'s markers, or append it under ``heading``."""
    start, end = _markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip() + f"\n\n## {heading}\n\n{block}\n"


def machine(env: dict[str, Any]) -> str:
    """The environment block of the docs: what the figures were measured on."""
    versions = ", ".join(f"{k} {env[k]}" for k in ("duckdb", "polars", "pyarrow", "torch",
                                                   "sentence-transformers") if env.get(k))
    return (f"{env['cpus']} cores ({env['cpu']}), {env['memory_gb']} GiB RAM, no GPU used, "
            f"Python {env['python']} on {env['platform']}; {versions}; unirec commit "
            f"`{env['commit']}`.")


def provenance(result: dict[str, Any]) -> str:
    """One line under each section: when, at which commit, how loaded the machine was."""
    before, after = result["load_avg_before"], result["load_avg_after"]
    return (f"_Measured {result['date']} at commit `{result['commit']}` in "
            f"{result['seconds']:.0f} s{' (quick)' if result['quick'] else ''}; load average "
            f"(1/5/15 min) {before[0]}/{before[1]}/{before[2]} before, "
            f"{after[0]}/{after[1]}/{after[2]} after._")


def render(step: Step, result: dict[str, Any]) -> str:
    """A step's section body: its tables (or why it failed) and the provenance line."""
    body = (f"**{step.title}** failed: `{result['error']}`" if "error" in result
            else step.markdown(result))
    return body + "\n\n" + provenance(result)


def write_docs(path: Path, env: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    """Rewrite the environment block and each measured step's section; keep everything else."""
    text = path.read_text() if path.exists() else INTRO
    text = _set_section(text, "environment", "Machine", machine(env))
    path.parent.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        if step.name in results:
            text = _set_section(text, step.name, step.title, render(step, results[step.name]))
            if step.figures and "error" not in results[step.name]:
                for figure in step.figures(results[step.name], path.parent):
                    print(f"drawn: {figure}")
    path.write_text(text.rstrip() + "\n")


def run_steps(steps: list[Step], quick: bool) -> dict[str, dict[str, Any]]:
    """Run each step in turn, stamping commit, time and load average around it."""
    results: dict[str, dict[str, Any]] = {}
    for step in steps:
        print(f"== {step.name}: {step.title}", file=sys.stderr, flush=True)
        before, started = environment(), time.perf_counter()
        try:
            result = step.run(quick)
        except Exception as err:  # one broken benchmark must not lose the others' results
            result = {"benchmark": step.name, "error": f"{type(err).__name__}: {err}"}
        result.update(quick=quick, date=before["date"], commit=before["commit"],
                      seconds=round(time.perf_counter() - started, 1),
                      load_avg_before=before["load_avg"],
                      load_avg_after=[round(x, 2) for x in os.getloadavg()])
        results[step.name] = result
        print(render(step, result) + "\n", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description="unirec benchmarks (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--only", default=None,
                        help="comma-separated steps to run (of "
                        f"{', '.join(s.name for s in STEPS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/<date>[-quick].json)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="markdown to update (default: docs/benchmarks.md, full runs only)")
    parser.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                        help="measure nothing: rewrite the docs from a results file")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        docs = args.docs or ROOT / "docs" / "benchmarks.md"
        write_docs(docs, saved["environment"], saved["benchmarks"])
        print(f"updated: {docs}")
        return 0
    names = [s.strip() for s in args.only.split(",")] if args.only else [s.name for s in STEPS]
    unknown = set(names) - {s.name for s in STEPS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; known: {[s.name for s in STEPS]}")
    env = environment()
    results = run_steps([s for s in STEPS if s.name in names], args.quick)
    suffix = "-quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}{suffix}.json"
    merged: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    merged.setdefault("benchmarks", {}).update(results)
    merged["environment"] = env
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"written: {out}")
    docs = args.docs or (None if args.quick else ROOT / "docs" / "benchmarks.md")
    if docs is not None:
        write_docs(docs, env, merged["benchmarks"])
        print(f"updated: {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
