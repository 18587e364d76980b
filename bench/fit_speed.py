"""Training throughput: ``unirec fit`` samples/s on this machine, eager against compiled.

Why: the issue's figure is training samples/s on 2 CPU cores, eager and with
``torch.compile``, measured in one run so the ratio survives a noisy machine. Each fit is a
whole ``unirec fit`` child process on the same featurized synthetic store; samples/s is read
from the model's ``metrics.jsonl`` (training time only, validation excluded), from the last
epoch so the compiled run's one-off compile (20-70 s on CPU) is reported apart.

Usage: python -m bench.fit_speed [--interactions 200000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import measure
from unirec.datasets import default_shape, synthesize, write_folder

UNIREC = str(Path(sys.executable).parent / "unirec")
VARIANTS = {"eager": ["--set", "train.compile=false"],
            "compiled": ["--set", "train.compile=true"]}


def run(n: int = 200_000, epochs: int = 3, batch_size: int = 1024) -> dict[str, Any]:
    """Featurize once, then fit each variant on a fresh copy of the store."""
    with tempfile.TemporaryDirectory(prefix="unirec-bench-fit-") as tmp:
        work = Path(tmp)
        write_folder(synthesize(*default_shape(n), seed=0), work / "data", fmt="parquet")
        feat = measure([UNIREC, "featurize", str(work / "data"), "--store", str(work / "base")])
        if feat.rc:
            return {"error": feat.tail}
        results: dict[str, Any] = {"interactions": n, "epochs": epochs,
                                   "batch_size": batch_size, "variants": {}}
        for name, flags in VARIANTS.items():
            store = work / name
            shutil.copytree(work / "base", store)
            r = measure([UNIREC, "fit", "--store", str(store), "--epochs", str(epochs),
                         "--set", "train.patience=100", "--set", f"train.batch_size={batch_size}",
                         *flags], timeout_s=1800)
            rows = [json.loads(x) for x in (store / "model" / "metrics.jsonl").read_text()
                    .splitlines()] if r.rc == 0 else []
            rows = [x for x in rows if "stage" not in x]  # the ranking stage's rows
            results["variants"][name] = {
                "rc": r.rc, "wall_s": round(r.wall_s, 2), "peak_rss_mb": round(r.peak_rss_mb),
                "others_cores": round(r.others_cores, 2),
                "samples_per_s_by_epoch": [round(x["samples_per_s"]) for x in rows],
                "train_seconds_by_epoch": [x["train_seconds"] for x in rows],
                "val_ndcg@10": rows[-1].get("val_ndcg@10") if rows else None,
                "tail": r.tail if r.rc else "",
            }
        v = results["variants"]
        if all(v[k]["samples_per_s_by_epoch"] for k in v):
            results["compiled_over_eager"] = round(
                v["compiled"]["samples_per_s_by_epoch"][-1]
                / v["eager"]["samples_per_s_by_epoch"][-1], 3)
        return results


def markdown(res: dict[str, Any]) -> str:
    """The docs/benchmarks.md section."""
    if "error" in res:
        return f"featurize failed:\n\n```\n{res['error']}\n```\n"
    lines = [f"`unirec fit` on {res['interactions']:,} synthetic interactions (all feature kinds "
             f"but images), batch {res['batch_size']}, {res['epochs']} epochs, CPU.", "",
             "| variant | samples/s by epoch | last epoch samples/s | wall s | peak RSS MB |",
             "|---|---|---:|---:|---:|"]
    for name, v in res["variants"].items():
        by = v["samples_per_s_by_epoch"]
        last = f"{by[-1]:,}" if by else "failed"
        lines.append(f"| {name} | {', '.join(f'{x:,}' for x in by)} | {last} | "
                     f"{v['wall_s']} | {v['peak_rss_mb']:,} |")
    if "compiled_over_eager" in res:
        lines += ["", f"Compiled / eager, last epoch: **{res['compiled_over_eager']}x**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interactions", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args(argv)
    res = run(args.interactions, args.epochs, args.batch_size)
    print(json.dumps(res, indent=1))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
