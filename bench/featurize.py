"""Featurize benchmark: the whole ``unirec featurize`` compiler at scale, embeddings apart.

Why: PROTOCOL.md ("Speed and scale") asks for featurize's wall seconds, interactions/s and
peak RSS at 1M and 10M interactions, with text embedding cost reported apart from the rest.
Ingest alone is compared with a peer in ``bench/ingest.py``; no peer compiles splits, samples,
vocabularies, embeddings, tensors and shards, so these are absolute figures, with the load on
the machine recorded next to each run (``others_cores``: CPU busy with other processes).

Per size: ``unirec.datasets.synthesize(*default_shape(n), seed=0)`` (categorical, continuous,
temporal features, item text titles; no images, and the generator's item descriptions dropped
so the workload stays the one measured since the first run: at 10M they are ~200k distinct
strings, which would turn the figure into a text-encoder benchmark; strings/s is reported
apart) written as a Parquet folder (the scale path:
DuckDB streams it) and, up to ``--doc-max``, also as the single JSON document. Each input is
featurized by ``.venv/bin/unirec featurize INPUT --store S`` twice on one store: the first run
embeds the titles, the second finds them in the store's embedding cache. ``report.json``'s
``embeddings.text.seconds`` gives the embedding cost, so cost without embeddings = wall - that.
A third run through ``bench/featurize_stages.py`` (same CLI, stage boundaries stamped; cache
warm) says which stage the rest goes to. From ``--memory-limit-from`` on, runs pass
``--set ingest.memory_limit=3GB`` (DuckDB spills). A run past ``--timeout`` or ``--max-rss-gb``
is killed and recorded, and that input stops there. Text throughput is measured twice: from
the first run's report (import + model load included) and by encoding the titles alone.

Usage: python -m bench.featurize --sizes 1000000,10000000 [--runs 1] [--out PATH] [--no-stages]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from bench.harness import environment, measure, save_results
from unirec.datasets import default_shape, synthesize, write_document, write_folder

UNIREC = Path(sys.executable).parent / "unirec"
TITLE = "featurize: the whole compiler (read, validate, split, samples, features, shards)"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
STAGES = ("startup", "read", "validate", "split", "samples", "features", "shards", "finish")


def prepare(n: int, work: Path, seed: int, doc_max: int
            ) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the inputs for one size; the generated frames are freed before anything is timed."""
    started = time.perf_counter()
    data = synthesize(*default_shape(n), seed=seed)
    data = dataclasses.replace(data, items=data.items.with_columns(
        text=pl.struct(pl.col("text").struct.field("title"))))
    inputs = {"parquet": work / "in-parquet"}
    write_folder(data, inputs["parquet"], fmt="parquet")
    if n <= doc_max:
        inputs["document"] = work / "data.json"
        write_document(data, inputs["document"])
    del data
    size_mb = {form: round(sum(f.stat().st_size for f in ([p] if p.is_file() else p.iterdir()))
                           / 2**20, 1) for form, p in inputs.items()}
    return inputs, {"generate_s": round(time.perf_counter() - started, 2), "input_mb": size_mb}


def one_run(cmd: list[str], store: Path, n: int, label: str, limits: dict[str, float],
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure one featurize child and read what its report says about embeddings."""
    run = measure(cmd, timeout_s=limits["timeout_s"], max_rss_mb=limits["max_rss_mb"],
                  env={**OFFLINE, **(env or {})})
    out: dict[str, Any] = {"label": label, **asdict(run)}
    if run.rc == 0 and (store / "report.json").exists():
        report = json.loads((store / "report.json").read_text())
        text = report.get("embeddings", {}).get("text", {})
        embed_s = float(text.get("seconds", 0.0))
        out.update(interactions_per_s=round(n / run.wall_s), report_seconds=report["seconds"],
                   kept={s: v["kept"] for s, v in report["sections"].items()},
                   text=text, embed_s=embed_s, wall_minus_embed_s=round(run.wall_s - embed_s, 3),
                   interactions_per_s_minus_embed=round(n / max(run.wall_s - embed_s, 1e-9)))
        out.pop("tail")
    print(f"  {n:>11,} {label:<22} {run.wall_s:8.2f} s {run.peak_rss_mb:8.1f} MB rc={run.rc} "
          f"embed={out.get('embed_s', '-')} s others={run.others_cores} cores load={run.load1}"
          + (f" KILLED: {run.killed}" if run.killed else ""), file=sys.stderr, flush=True)
    return out


def bench_input(n: int, form: str, path: Path, work: Path, runs: int, stages: bool,
                extra: list[str], limits: dict[str, float]) -> dict[str, Any]:
    """Cold + cached runs (``runs`` times, a fresh store each), then one stage-timed run."""
    measured: list[dict[str, Any]] = []
    for i in range(runs):
        store = work / f"store-{form}-{i}"
        cmd = [str(UNIREC), "featurize", str(path), "--store", str(store), *extra]
        for label in ("cold", "cached"):
            measured.append(one_run(cmd, store, n, f"{form} {label} {i + 1}/{runs}", limits))
            if measured[-1]["rc"] != 0:
                return {"failed": measured[-1].get("killed") or f"rc {measured[-1]['rc']}",
                        "runs": measured}
        if i:
            shutil.rmtree(store, ignore_errors=True)  # keep one store (GBs at 10M) for stages
    result: dict[str, Any] = {"runs": measured}
    for kind in ("cold", "cached"):
        rs = [r for r in measured if f" {kind} " in r["label"]]
        wall = statistics.median(r["wall_s"] for r in rs)
        embed = statistics.median(r["embed_s"] for r in rs)
        result[kind] = {"wall_s": wall, "interactions_per_s": round(n / wall),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "embed_s": embed,
                        "wall_minus_embed_s": round(wall - embed, 3),
                        "interactions_per_s_minus_embed": round(n / max(wall - embed, 1e-9)),
                        "others_cores_max": max(r["others_cores"] for r in rs)}
    first = measured[0]["text"]
    if first.get("embedded"):
        result["text_strings_per_s"] = round(first["embedded"] / first["seconds"], 1)
    if stages:
        store, timing = work / f"store-{form}-0", work / f"stages-{form}.json"
        cmd = [sys.executable, "-m", "bench.featurize_stages", "featurize", str(path),
               "--store", str(store), *extra]
        result["staged"] = one_run(cmd, store, n, f"{form} cached, stage-timed", limits,
                                   {"UNIREC_BENCH_STAGES": str(timing)})
        if timing.exists():
            result["stages_s"] = json.loads(timing.read_text())["seconds"]
    return result


def text_child(items_parquet: str, limit: int) -> None:
    """(Runs in a child.) Load the default text model, then encode distinct titles, uncached;
    the first batch is timed apart, so ``strings_per_s`` is the steady rate."""
    import polars as pl

    from unirec.config import Config
    from unirec.features.embed import TextEmbedder

    titles = (pl.read_parquet(items_parquet)["text"].struct.field("title").drop_nulls()
              .unique().sort().head(limit).to_list())
    cfg = Config().text
    t0 = time.perf_counter()
    emb = TextEmbedder(cfg.model, "cpu", cfg.batch_size)
    dim = emb.dim  # imports sentence-transformers and loads the weights
    t1 = time.perf_counter()
    emb.embed(titles[: cfg.batch_size])  # first forward pass: one-off kernel set-up
    t2 = time.perf_counter()
    rest = titles[cfg.batch_size:]
    emb.embed(rest)
    t3 = time.perf_counter()
    print(json.dumps({"strings": len(rest), "dim": dim, "batch_size": cfg.batch_size,
                      "load_s": round(t1 - t0, 3), "first_batch_s": round(t2 - t1, 3),
                      "encode_s": round(t3 - t2, 3),
                      "strings_per_s": round(len(rest) / (t3 - t2), 1)}))


def text_throughput(items_parquet: Path, limit: int, limits: dict[str, float]) -> dict[str, Any]:
    """Encode-only strings/s of the default text model, in a child like every other run."""
    code = f"from bench.featurize import text_child; text_child({str(items_parquet)!r}, {limit})"
    run = measure([sys.executable, "-c", code], timeout_s=limits["timeout_s"], env=OFFLINE)
    line = run.tail.splitlines()[-1] if run.tail else ""
    result = json.loads(line) if run.rc == 0 and line.startswith("{") else {"failed": run.tail}
    result.update(wall_s=run.wall_s, peak_rss_mb=run.peak_rss_mb, others_cores=run.others_cores)
    print(f"  text encode only: {result.get('strings_per_s', result)} strings/s",
          file=sys.stderr, flush=True)
    return result


def run(sizes: list[int], runs: int = 1, seed: int = 0, stages: bool = True,
        doc_max: int = 1_000_000, memory_limit_from: int = 10_000_000,
        timeout_s: float = 600, max_rss_gb: float = 12, text_limit: int = 8192
        ) -> dict[str, Any]:
    """Measure every size and input form; the results as written to JSON."""
    limits = {"timeout_s": timeout_s, "max_rss_mb": max_rss_gb * 1024}
    results: list[dict[str, Any]] = []
    text: dict[str, Any] = {}
    for n in sizes:
        shape = default_shape(n)
        extra = ["--set", "ingest.memory_limit=3GB"] if n >= memory_limit_from else []
        with tempfile.TemporaryDirectory(prefix="unirec-bench-featurize-") as tmp:
            work = Path(tmp)
            inputs, meta = prepare(n, work, seed, doc_max)
            size: dict[str, Any] = {"interactions": n, "users": shape[0], "items": shape[1],
                                    **meta, "extra_args": extra}
            for form, path in inputs.items():
                size[form] = bench_input(n, form, path, work, runs, stages, extra, limits)
            if not text:
                text = text_throughput(inputs["parquet"] / "items.parquet", text_limit, limits)
        results.append(size)
    return {"benchmark": "featurize", "title": TITLE, "runs": runs, "seed": seed,
            "limits": limits, "sizes": results, "text_encode": text}


def _row(n: int, form: str, kind: str, s: dict[str, Any], text: dict[str, Any]) -> str:
    embedded = f" ({text.get('embedded', 0):,} of {text.get('strings', 0):,} titles)"
    return (f"| {n:,} | {form} | {kind} | {s['wall_s']:.1f} | {s['interactions_per_s']:,} | "
            f"{s['peak_rss_mb']:,.0f} | {s['embed_s']:.1f}{embedded} | "
            f"{s['wall_minus_embed_s']:.1f} | {s['interactions_per_s_minus_embed']:,} | "
            f"{s['others_cores_max']:.2f} |")


def markdown(report: dict[str, Any]) -> str:
    """The tables people read: cold vs cached runs, stage seconds, text throughput."""
    lines = [f"**{TITLE}** — `unirec featurize INPUT --store S`, synthetic data with "
             "categorical, continuous and temporal features and item titles (no images); "
             "cold = first run (embeds the titles), cached = second run on the same store "
             "(titles found in the embedding cache). No peer does this whole job.", "",
             "| interactions | input | run | wall s | interactions/s | peak RSS MB | "
             "text embed s | wall − embed s | interactions/s w/o embed | others' cores |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    stage_rows, failed = [], []
    for size in report["sizes"]:
        n = size["interactions"]
        for form in ("parquet", "document"):
            r = size.get(form)
            if r is None:
                continue
            if "failed" in r:
                failed.append(f"{n:,} {form}: {r['failed']}")
                continue
            for kind, i in (("cold", 0), ("cached", 1)):
                lines.append(_row(n, form, kind, r[kind], r["runs"][i]["text"]))
            if "stages_s" in r:
                st = r["stages_s"]
                stage_rows.append(f"| {n:,} | {form} | " + " | ".join(
                    f"{st.get(k, 0):.1f}" for k in STAGES) + f" | {r['staged']['wall_s']:.1f} |")
    if failed:
        lines += ["", "Stopped: " + "; ".join(failed)]
    if stage_rows:
        lines += ["", "Seconds per stage (third run, cache warm; `features` includes the "
                  "cached-embedding lookup):", "",
                  "| interactions | input | " + " | ".join(STAGES) + " | wall |",
                  "|---:|---|" + "---:|" * (len(STAGES) + 1), *stage_rows]
    first = next((s["parquet"] for s in report["sizes"] if "text_strings_per_s" in
                  s.get("parquet", {})), None)
    t = report.get("text_encode", {})
    if first or "strings_per_s" in t:
        cold = (f"{first['text_strings_per_s']:,} strings/s in the first featurize run "
                "(sentence-transformers import and model load included)" if first else "")
        alone = (f"{t['strings_per_s']:,} strings/s encoding {t['strings']:,} distinct titles "
                 f"alone (batch {t['batch_size']}, after a {t['load_s']:.1f} s import + load "
                 f"and a {t['first_batch_s']:.2f} s first batch; other processes kept "
                 f"{t['others_cores']:.2f} cores busy)" if "strings_per_s" in t else "")
        lines += ["", "Text embedding (all-MiniLM-L6-v2, CPU): "
                  + "; ".join(x for x in (cold, alone) if x) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--sizes", default="1000000,10000000",
                        help="comma-separated interaction counts (default: 1000000,10000000)")
    parser.add_argument("--runs", type=int, default=1, help="cold + cached pairs per input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stages", dest="stages", action="store_false",
                        help="skip the extra stage-timed run")
    parser.add_argument("--doc-max", type=int, default=1_000_000,
                        help="also featurize the single JSON document up to this size")
    parser.add_argument("--memory-limit-from", type=int, default=10_000_000,
                        help="pass --set ingest.memory_limit=3GB from this size on")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="kill a run above this")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: bench/results/featurize-<date>.json)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report = {"environment": environment(),
              **run(sizes, args.runs, args.seed, args.stages, args.doc_max,
                    args.memory_limit_from, args.timeout, args.max_rss_gb)}
    report["load_avg_after"] = environment()["load_avg"]
    out = save_results(report, "featurize", args.out)
    print(markdown(report))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
