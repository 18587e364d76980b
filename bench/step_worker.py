"""One tree's training step, driven over stdin/stdout by ``bench.fit_step --old-tree``.

Why a process per tree: two versions of ``unirec`` cannot share one interpreter, and the
issue's figure is a ratio measured side by side in one run. The parent starts this script
once with ``PYTHONPATH`` = this tree and once with the other tree, and sends both the same
commands in alternation, so both steps see the same load. It imports nothing but the
public ``unirec`` modules both trees have, and reads the same batches (same store, same
shard seed), so both trees train on identical data from identically seeded weights.

Commands (one per line): ``run K`` -> K step times in seconds (wall) and the CPU seconds
of all K (all threads: what the step costs whatever else shares the cores); ``flops`` ->
FLOPs/sample of one step (``torch.utils.flop_counter``); ``mem`` -> peak RSS (MiB) and its
growth since the set-up; ``quit``. Replies are one JSON line each.

Usage: python bench/step_worker.py STORE BATCH COMPILED '{"fusion": "attention"}'
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ``import unirec`` does, before torch
import torch  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(store: str, batch: int, compiled: bool, overrides: dict):
    """(step function, batches) of this tree's default training step."""
    from unirec.config import TrainConfig
    from unirec.model.inputs import gather_history, load_inputs
    from unirec.model.towers import TwoTower
    from unirec.store import Store
    from unirec.train import loop, step
    from unirec.train.data import ShardStream
    from unirec.train.losses import LOSSES

    cfg = TrainConfig(batch_size=batch, **overrides)
    inp = load_inputs(Store(store))
    torch.manual_seed(0)
    model = TwoTower(inp.manifest, inp.users, inp.items, inp.text, inp.image,
                     inp.user_trained, cfg)
    net = torch.compile(model) if compiled else model
    sampler = loop.Sampler(inp.items["popularity"], cfg, batch, cfg.negatives)
    positives = step.PositiveMask(inp.positive_keys, inp.n_users, inp.n_items)
    opt = step.make_optimizer(model.parameters(), cfg, torch.device("cpu"))
    content = cfg.content_loss > 0 and cfg.item_id and len(model.item.encoders) > 0
    fn = step.Step(net, opt, sampler, LOSSES.get(cfg.loss)(), positives, cfg,
                   torch.device("cpu"), cfg.precision == "bf16", model=model,
                   content=content)
    width = inp.manifest["samples"]["history_length"]
    stream = ShardStream(inp.train_shards, seed=0, batch_size=batch, drop_last=True)
    batches = []
    for epoch in range(1, 20):
        stream.set_epoch(epoch)
        batches += [{**b, "history": gather_history(inp.sequence, b["hend"], b["hlen"], width)}
                    for b in stream]
        if len(batches) >= 12 or not batches:
            break
    return fn, batches


def main() -> None:
    store, batch, compiled, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", \
        json.loads(sys.argv[4])
    fn, batches = build(store, batch, compiled, overrides)
    if not batches:
        print(json.dumps({"error": f"fewer than one batch of {batch}"}), flush=True)
        return
    t = time.perf_counter()
    fn(batches[0])  # warm-up (and the compile)
    print(json.dumps({"first_step_s": round(time.perf_counter() - t, 3)}), flush=True)
    base, done = _rss_mib(), 1
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            times, cpu = [], time.process_time()
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                fn(batches[done % len(batches)])
                times.append(time.perf_counter() - t)
                done += 1
            print(json.dumps({"wall": times, "cpu": time.process_time() - cpu}), flush=True)
        elif cmd[0] == "flops":
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as counter:
                fn(batches[done % len(batches)])
            print(json.dumps(counter.get_total_flops() / batch), flush=True)
        elif cmd[0] == "mem":
            print(json.dumps({"peak_rss_mib": round(_rss_mib()),
                              "step_growth_mib": round(_rss_mib() - base)}), flush=True)
        else:
            return


if __name__ == "__main__":
    main()
