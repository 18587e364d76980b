"""``unirec featurize ...`` run in this process, recording how long each featurize stage took.

Why: ``report.json`` holds featurize's total seconds and the embedding seconds, not where the
rest goes. featurize advances one progress object (``unirec.featurize.progress.Stages``) at
each stage boundary (read, validate, split, samples, features, shards), so this wrapper swaps
in a subclass that stamps the clock at each boundary, then calls the CLI's own entry point
(the code ``.venv/bin/unirec`` runs; the stamps cost microseconds). The stamps go to the
JSON file named by ``UNIREC_BENCH_STAGES``, as seconds per stage (``seconds``; the process's
CPU seconds at the same boundaries in ``cpu_seconds``) plus ``startup`` (imports and
config before reading) and ``finish`` (manifest, report and the atomic swap after the last
stage), so the stages add up to the process's wall time less interpreter start-up.

Usage: UNIREC_BENCH_STAGES=OUT.json python -m bench.featurize_stages featurize DATA --store S
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

START = time.perf_counter()
MARKS: list[tuple[str, float]] = []
CPU_MARKS: list[tuple[str, float]] = []  # the same boundaries, process CPU (all threads)


def _mark(name: str) -> None:
    MARKS.append((name, time.perf_counter()))
    CPU_MARKS.append((name, time.process_time()))


def _timed_stages(base: type) -> type:
    """A subclass of featurize's ``Stages`` that stamps the clock at every boundary."""

    class TimedStages(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _mark("read")
            super().__init__(*args, **kwargs)

        def next(self, name: str) -> None:
            _mark(name)
            super().next(name)

        def __exit__(self, *exc: object) -> None:
            _mark("finish")
            super().__exit__(*exc)

    return TimedStages


def durations(marks: list[tuple[str, float]], start: float, end: float) -> dict[str, float]:
    """Seconds per stage: each stamp opens a stage that the next stamp (or ``end``) closes."""
    out = {"startup": round(marks[0][1] - start, 3)} if marks else {}
    for (name, t), (_, t_next) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        out[name] = round(out.get(name, 0.0) + t_next - t, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with timed stages; write the durations even when featurize fails."""
    run_module = importlib.import_module("unirec.featurize.run")
    run_module.Stages = _timed_stages(run_module.Stages)
    from unirec.cli.main import cli

    rc = 0
    try:
        cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="unirec",
                 standalone_mode=False)
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else 1
    except Exception as err:  # reported as the CLI would, then the stamps are still written
        print(f"error: {err}", file=sys.stderr)
        rc = 1
    finally:
        out = os.environ.get("UNIREC_BENCH_STAGES")
        if out:
            stages = durations(MARKS, START, time.perf_counter())
            cpu = durations(CPU_MARKS, 0.0, time.process_time())
            Path(out).write_text(json.dumps({"rc": rc, "seconds": stages,
                                             "cpu_seconds": cpu}) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
