"""Profile 20 default training steps on a store: the #13 before/after table.

Why: the issue's profile (self CPU per op over 20 steps, batch 1,024) is what says where a
step's time goes; run it on two trees back to back (``PYTHONPATH=TREE``) to compare. Prints
the CPU seconds and page faults per step, samples/s, then the profiler's table (``SHAPES=1``
adds the table grouped by input shapes).

Usage: PYTHONPATH=$PWD python bench/fit_profile.py STORE [BATCH] [train.key=value ...]
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ``import unirec`` does, before torch
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from step_worker import build  # this folder's, run on the tree on PYTHONPATH

    store = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    overrides = dict(a.split("=", 1) for a in sys.argv[3:])
    fn, batches = build(store, batch, False, overrides)
    for b in batches[:2]:  # warm-up
        fn(b)
    steps = [batches[i % len(batches)] for i in range(2, 22)]
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for b in steps:
        fn(b)
    wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    print(f"threads {torch.get_num_threads()}; 20 steps {wall:.2f} s wall, "
          f"{20 * batch / wall:,.0f} samples/s; CPU s/step {cpu / 20:.4f}; "
          f"minor faults/step {(r1.ru_minflt - r0.ru_minflt) / 20:.0f}")
    shapes = bool(os.environ.get("SHAPES"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        for b in steps:
            fn(b)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30,
                                    max_name_column_width=40))
    if shapes:
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="cpu_time_total", row_limit=40, max_name_column_width=30,
            max_shapes_column_width=70))


if __name__ == "__main__":
    main()
