"""Training step speed: this version's step against the previous release's, in one process.

Why: the issue's figure is training samples/s of the default model on 2 CPU cores, measured
side by side with the previous release's step in the same run, because on a shared machine
only the ratio holds. Both steps run here on the same store, the same pre-read batches and
the same initial weights, interleaved in short blocks (order swapped every round); samples/s
is batch size / median step time. The previous release's ``unirec/train`` is read from git
(``PREVIOUS``) into a temporary package (``unirec.train`` imports renamed), so its step is
the real code, not a re-creation. Also measured in the same run: FLOPs per sample
(``torch.utils.flop_counter``, forward + backward) and a 2048² fp32 matmul's FLOP/s, so
"share of the machine's matmul speed reached" is a ratio too.

Variants: the default model, attention fusion, transformer history; batch 1,024 and 4,096;
eager, and (``--compiled``) the model under ``torch.compile`` as ``train.compile=true`` does.

``--old-tree DIR`` compares against a checkout instead (e.g. main before a branch): each
tree's step runs in its own process (``bench/step_worker.py``), the two alternating ``steps``
at a time on the same batches; peak RSS and the load average come with each row.

Usage: python -m bench.fit_step [--store STORE | --interactions 100000] [--rounds 5]
       [--steps 3] [--compiled] [--quick] [--old-tree DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ``import unirec`` does, before torch
import torch  # noqa: E402

from bench.harness import ROOT, environment, save_results

PREVIOUS = "46d556d"  # the release before the fast step (main at the filing)
VARIANTS = {"default": {}, "attention fusion": {"fusion": "attention"},
            "transformer history": {"history": "transformer"}}


def previous_train(commit: str = PREVIOUS) -> ModuleType:
    """``unirec/train`` at ``commit`` as the package ``unirec_prev_train``."""
    tmp = Path(tempfile.mkdtemp(prefix="unirec-prev-"))
    pkg = tmp / "unirec_prev_train"
    pkg.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{commit}:unirec/train"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        src = subprocess.run(["git", "show", f"{commit}:unirec/train/{name}"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        (pkg / name).write_text(src.replace("unirec.train.", "unirec_prev_train.")
                                .replace("from unirec.train import", "from unirec_prev_train "
                                         "import")
                                # modules that moved since (#12): their homes now
                                .replace("unirec.featurize.shards", "unirec.store.shards")
                                .replace("unirec.serve.bundle", "unirec.model.bundle"))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("unirec_prev_train")


def _store(args: argparse.Namespace, work: Path) -> Path:
    if args.store:
        return Path(args.store)
    from unirec.datasets import default_shape, synthesize, write_folder
    from unirec.featurize import featurize
    write_folder(synthesize(*default_shape(args.interactions), seed=0), work / "data",
                 fmt="parquet")
    featurize(work / "data", store=work / "store")
    return work / "store"


def _batches(paths: list[Path], size: int, n: int) -> list[dict[str, torch.Tensor]]:
    from unirec.model.inputs import gather_history, load_sequences
    from unirec.store import Store
    from unirec.train.data import ShardStream

    store = Store(paths[0].parent.parent)  # shards/ sits in the store folder
    items = torch.from_numpy(load_sequences(store)["items"])
    width = store.manifest["samples"]["history_length"]
    out: list[dict[str, torch.Tensor]] = []
    stream = ShardStream(paths, seed=0, batch_size=size, drop_last=True)
    for epoch in range(1, 100):
        stream.set_epoch(epoch)
        out += [{**b, "history": gather_history(items, b["hend"], b["hlen"], width)}
                for b in stream]
        if len(out) >= n or not out:
            return out[:n]
    return out[:n]


def _steps(store: Path, overrides: dict[str, Any], batch: int, compiled: bool
           ) -> dict[str, Any]:
    """Build both steps on the same model weights; returns {name: step fn}."""
    from unirec.config import TrainConfig
    from unirec.model.inputs import load_inputs
    from unirec.model.towers import TwoTower
    from unirec.store import Store
    from unirec.train import loop, step
    from unirec.train.losses import LOSSES
    prev = importlib.import_module("unirec_prev_train.loop")
    cfg = TrainConfig(batch_size=batch, **overrides)
    inp = load_inputs(Store(store))
    fns = {}
    for name in ("previous", "this"):
        torch.manual_seed(0)
        mod_towers = prev.TwoTower if name == "previous" else TwoTower
        model = mod_towers(inp.manifest, inp.users, inp.items, inp.text, inp.image,
                           inp.user_trained, cfg)
        net = torch.compile(model) if compiled else model
        if name == "previous":
            fns[name] = _previous_step(prev, net, model, inp, cfg)
        else:
            sampler = loop.Sampler(inp.items["popularity"], cfg, batch, cfg.negatives)
            positives = step.PositiveMask(inp.positive_keys, inp.n_users, inp.n_items)
            opt = step.make_optimizer(model.parameters(), cfg, torch.device("cpu"))
            fns[name] = step.Step(net, opt, sampler, LOSSES.get(cfg.loss)(), positives, cfg,
                                  torch.device("cpu"), False)
    return fns


def _previous_step(prev: ModuleType, net: Any, model: Any, inp: Any, cfg: Any) -> Any:
    """The loop body of the previous release, verbatim but for its variable names."""
    losses = importlib.import_module("unirec_prev_train.losses")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = prev.Sampler(inp.items["popularity"], cfg, cfg.batch_size, cfg.negatives)
    loss_fn, keys = losses.LOSSES.get(cfg.loss)(), inp.positive_keys

    def run(b: dict[str, torch.Tensor]) -> torch.Tensor:
        user, item = b["user"].long(), b["item"].long()
        negs = sampler.sample()
        u, v, nv = net(user, b["history"], item, negs)
        loss = loss_fn(losses.LossInput(
            user_vec=u.float(), item_vec=v.float(), neg_vec=nv.float(),
            logq_items=sampler.logq[item], logq_neg=sampler.logq[negs],
            mask_batch=prev._positive_mask(keys, user, item, inp.n_items),
            mask_neg=prev._positive_mask(keys, user, negs, inp.n_items),
            weight=b["weight"].float(), temperature=cfg.temperature, logq=cfg.logq))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return run


def _flops(fn: Any, batch: dict[str, torch.Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn(batch)
    return counter.get_total_flops() / len(batch["user"])


def matmul_flops(n: int = 2048, reps: int = 3) -> float:
    """FLOP/s of an n x n fp32 matmul on this machine now (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def measure(store: Path, overrides: dict[str, Any], batch: int, rounds: int, steps: int,
            compiled: bool) -> dict[str, Any]:
    """Interleaved timing of both steps on the same batches."""
    from unirec.model.inputs import load_inputs
    from unirec.store import Store
    paths = load_inputs(Store(store)).train_shards
    data = _batches(paths, batch, steps * 2 + 2)
    if len(data) < 2:
        return {"error": f"fewer than 2 batches of {batch}"}
    fns = _steps(store, overrides, batch, compiled)
    out: dict[str, Any] = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn(data[0])  # warm-up (and the compile, when compiled)
        out[name] = {"first_step_s": round(time.perf_counter() - t, 2),
                     "flops_per_sample": None if compiled else round(_flops(fn, data[1])),
                     "step_s": []}
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            for i in range(steps):
                t = time.perf_counter()
                fns[name](data[2 + (r * steps + i) % (len(data) - 2)])
                out[name]["step_s"].append(time.perf_counter() - t)
    for v in out.values():
        v["samples_per_s"] = round(batch / statistics.median(v["step_s"]))
        v["step_s"] = [round(s, 4) for s in v["step_s"]]
    out["ratio"] = round(out["this"]["samples_per_s"] / out["previous"]["samples_per_s"], 2)
    return out


class _Worker:
    """``bench/step_worker.py`` on one tree: its step, driven line by line."""

    def __init__(self, tree: Path, store: Path, batch: int, compiled: bool,
                 overrides: dict[str, Any]) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("step_worker.py")), str(store),
             str(batch), "1" if compiled else "0", json.dumps(overrides)],
            cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.started = time.perf_counter()

    def ask(self, line: str | None = None) -> Any:
        if line is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        assert self.proc.stdout is not None
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"step worker exited with {self.proc.wait()}")
        return json.loads(reply)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
        self.proc.wait()


def measure_trees(store: Path, old_tree: Path, overrides: dict[str, Any], batch: int,
                  rounds: int, steps: int, compiled: bool) -> dict[str, Any]:
    """The old tree's step and this one's, each in its own process on the same batches,
    ``steps`` at a time in alternation (order swapped every round)."""
    trees = {"previous": old_tree, "this": ROOT}
    workers = {name: _Worker(tree, store, batch, compiled, overrides)
               for name, tree in trees.items()}
    out: dict[str, Any] = {"load_before": round(os.getloadavg()[0], 1)}
    try:
        for name, w in workers.items():
            first = w.ask()
            if "error" in first:
                return first
            out[name] = {**first, "step_s": [], "cpu_s": 0.0, "flops_per_sample":
                         None if compiled else round(w.ask("flops"))}
        order = list(workers)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                ran = workers[name].ask(f"run {steps}")
                out[name]["step_s"] += ran["wall"]
                out[name]["cpu_s"] += ran["cpu"]
        for name, w in workers.items():
            out[name].update(w.ask("mem"))
    finally:
        for w in workers.values():
            w.close()
    for name in trees:
        v = out[name]
        v["samples_per_s"] = round(batch / statistics.median(v["step_s"]))
        v["samples_per_cpu_s"] = round(batch * len(v["step_s"]) / v.pop("cpu_s"))
        v["step_s"] = [round(s, 4) for s in v["step_s"]]
    out["ratio"] = round(out["this"]["samples_per_s"] / out["previous"]["samples_per_s"], 2)
    out["cpu_ratio"] = round(out["this"]["samples_per_cpu_s"] /
                             out["previous"]["samples_per_cpu_s"], 2)
    out["load_after"] = round(os.getloadavg()[0], 1)
    return out


def _tree_commit(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                          capture_output=True, text=True).stdout.strip() or str(tree)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "old_tree", None):
        return run_trees(args)
    previous_train()
    with tempfile.TemporaryDirectory(prefix="unirec-bench-step-") as tmp:
        store = _store(args, Path(tmp))
        res: dict[str, Any] = {"environment": environment(), "previous": PREVIOUS,
                               "threads": torch.get_num_threads(), "store": str(store),
                               "rows": [], "matmul_gflops": []}
        variants = {"default": {}} if args.quick else VARIANTS
        batches = [1024] if args.quick else [1024, 4096]
        modes = [False, True] if args.compiled else [False]
        for compiled in modes:
            for name, overrides in variants.items():
                for batch in batches:
                    if compiled and (name != "default" or batch != 1024):
                        continue  # compile costs minutes here: the default model only
                    res["matmul_gflops"].append(round(matmul_flops() / 1e9, 1))
                    row = measure(store, overrides, batch, args.rounds, args.steps, compiled)
                    res["rows"].append({"variant": name, "batch": batch,
                                        "mode": "compiled" if compiled else "eager", **row})
                    print(json.dumps({k: v for k, v in res["rows"][-1].items()}, default=str)
                          [:400], flush=True)
        res["matmul_gflops"].append(round(matmul_flops() / 1e9, 1))
    return res


def run_trees(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant x batch (x mode) of ``--old-tree`` against this tree."""
    old = Path(args.old_tree).resolve()
    with tempfile.TemporaryDirectory(prefix="unirec-bench-step-") as tmp:
        store = _store(args, Path(tmp))
        res: dict[str, Any] = {"environment": environment(), "trees": True,
                               "previous": f"{_tree_commit(old)} ({old})",
                               "threads": torch.get_num_threads(), "store": str(store),
                               "rows": [], "matmul_gflops": []}
        variants = {"default": {}} if args.quick else VARIANTS
        batches = [1024] if args.quick else [1024, 4096]
        for compiled in [False, True] if args.compiled else [False]:
            for name, overrides in variants.items():
                for batch in batches:
                    if compiled and (name != "default" or batch != 1024):
                        continue  # compile costs minutes here: the default model only
                    res["matmul_gflops"].append(round(matmul_flops() / 1e9, 1))
                    row = measure_trees(store, old, overrides, batch, args.rounds, args.steps,
                                        compiled)
                    res["rows"].append({"variant": name, "batch": batch,
                                        "mode": "compiled" if compiled else "eager", **row})
                    print(json.dumps(res["rows"][-1], default=str), flush=True)
        res["matmul_gflops"].append(round(matmul_flops() / 1e9, 1))
    return res


def for_run(quick: bool) -> dict[str, Any]:
    """``bench/run.py``'s entry: a synthetic store, eager (compiled too when not quick)."""
    return run(argparse.Namespace(store=None, interactions=50_000 if quick else 100_000,
                                  rounds=3 if quick else 5, steps=2 if quick else 3,
                                  compiled=not quick, quick=quick))


def markdown(res: dict[str, Any]) -> str:
    """The docs/benchmarks.md table."""
    mm = statistics.median(res["matmul_gflops"])
    how = ("each tree in its own process, alternating on the same batches and weights"
           if res.get("trees") else "interleaved in one process on the same batches and "
           "weights")
    lines = [f"Step speed, this version against `{res['previous']}`, {how}; "
             f"{res['threads']} threads; a 2048² fp32 matmul ran at {mm:.0f} GFLOP/s in the "
             "same run. Ratio: median step wall time; CPU ratio: CPU seconds per step (all "
             "threads), which other processes on the cores disturb less.", "",
             "| variant | batch | mode | previous samples/s | this samples/s | ratio | "
             "CPU ratio | FLOP/sample prev → this | share of matmul FLOP/s (this) | "
             "peak RSS MiB prev → this | load |",
             "|---|---:|---|---:|---:|---:|---:|---|---:|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['mode']} | {r['error']} |")
            continue
        p, t = r["previous"], r["this"]
        fl = (f"{p['flops_per_sample'] / 1e6:.2f} → {t['flops_per_sample'] / 1e6:.2f} M"
              if t["flops_per_sample"] else "n/a")
        share = (f"{t['flops_per_sample'] * t['samples_per_s'] / (mm * 1e9):.1%}"
                 if t["flops_per_sample"] else "n/a")
        cpu = f"{r['cpu_ratio']}x" if "cpu_ratio" in r else "n/a"
        lines.append(f"| {r['variant']} | {r['batch']:,} | {r['mode']} | "
                     f"{p['samples_per_s']:,} | {t['samples_per_s']:,} | **{r['ratio']}x** | "
                     f"{cpu} | {fl} | {share} | {_mem(p)} → {_mem(t)} "
                     f"| {r.get('load_before', '?')}–{r.get('load_after', '?')} |")
    return "\n".join(lines) + "\n"


def _mem(v: dict[str, Any]) -> str:
    return f"{v['peak_rss_mib']:,}" if "peak_rss_mib" in v else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="a featurized store (default: a synthetic one)")
    ap.add_argument("--interactions", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compiled", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--old-tree", help="a checkout of the version to compare against (e.g. "
                    "`git worktree add --detach /tmp/old main`): each tree's step runs in its "
                    "own process (bench/step_worker.py), alternating")
    args = ap.parse_args(argv)
    res = run(args)
    print(markdown(res))
    print("written:", save_results(res, "fit-step", args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
