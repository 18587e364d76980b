"""``train.refit_parallel``: the refit trained beside the early-stopped run, on other cores.

Why: ``train.refit`` trains a fresh model (same seed) on train + validation for the epoch
count early stopping keeps, after that run ends: on MovieLens-100K the two runs are ~40 of a
fit's ~50 s. The refit needs nothing from the first run but *when* it stops, and with a
constant learning rate training for e epochs is exactly the first e epochs of training for
more. And on a CPU a step at batch 1,024 is bound by per-op overhead, not arithmetic: two
threads run it no faster than one (28k samples/s on one thread, 26k on two, MovieLens-100K).
So a child process trains the refit epoch by epoch on half the threads while the parent
trains and validates on the other half. After each validated epoch the parent sends its
verdict (a new best or not); the child keeps the weights of every epoch that may still be
the kept one, and at the stop writes the kept epoch's (training on until it gets there).
The served model is the one the refit would have trained in order, to the bit (same seed,
same batches, same draws; ``tests/train/test_refit_parallel.py``), about one run sooner.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unirec.config import TrainConfig
from unirec.model.checkpoint import load_weights, save_weights
from unirec.model.inputs import Inputs, load_inputs
from unirec.model.towers import TwoTower
from unirec.store import Store

_POLL_STEPS = 8  # steps between looks at the parent's messages inside an epoch
# auto's floor: the child's start (a new interpreter importing torch) costs ~2 s, what a
# refit of ~20k samples a few epochs long costs on two cores
AUTO_MIN_SAMPLES = 20_000


def wanted(cfg: TrainConfig, device: torch.device, world: int, resume: bool,
           warm_start: bool, inp: Inputs) -> bool:
    """Whether this fit refits in parallel: ``true``, or ``auto`` on a CPU with two threads
    or more, one process (no torchrun), a fresh fit with a validation slice to stop on, and
    at least ``AUTO_MIN_SAMPLES`` training samples."""
    if not cfg.refit or world > 1 or resume or warm_start or not len(inp.val_users):
        return False
    if cfg.refit_parallel is True:
        return device.type == "cpu"
    samples = inp.manifest["shards"].get("train", {}).get("n_samples", 0)
    return cfg.refit_parallel == "auto" and device.type == "cpu" and \
        torch.get_num_threads() >= 2 and samples >= AUTO_MIN_SAMPLES


@dataclass
class RefitAhead:
    """The parent's handle on the child training the refit: its process and the pipe the
    verdicts go down (one line each: ``epoch E 0|1``, ``stop E``)."""

    process: subprocess.Popen
    out: Path
    threads: int  # the parent's own thread count, restored when the child is done
    stopped: bool = False

    @classmethod
    def start(cls, store: Path, cfg: TrainConfig, out: Path) -> RefitAhead:
        """Start the child on half the threads (at least one); the parent keeps the rest.

        A new interpreter (``python -m unirec.train.refit_ahead``), not multiprocessing:
        its ``spawn`` would import the user's main script again in the child (a script
        calling ``unirec.fit`` at top level would run twice), and ``fork`` would copy a
        process whose OpenMP pool is running."""
        threads = torch.get_num_threads()
        child = max(1, threads // 2)
        process = subprocess.Popen(
            [sys.executable, "-m", "unirec.train.refit_ahead", str(store), str(out),
             str(child), json.dumps(cfg.model_dump(mode="json"))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(child)})
        torch.set_num_threads(max(1, threads - child))
        return cls(process, out, threads)

    def _send(self, line: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # a dead child: finish says so
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()

    def epoch(self, epoch: int, improved: bool) -> None:
        """The parent validated ``epoch``: a new best (the child keeps it) or not."""
        self._send(f"epoch {epoch} {int(improved)}")

    def stop_at(self, epochs: int) -> None:
        """The first run is over: the child keeps ``epochs`` (0: none) and ends, as soon as
        it has trained them (sent once, before the ranker trains, so no epoch is wasted)."""
        if not self.stopped:
            self._send(f"stop {epochs}")
            self.stopped = True

    def finish(self, epochs: int, model: TwoTower) -> bool:
        """Wait for the child and load its weights of ``epochs`` (0: no refit) into
        ``model``; False when the child failed (the caller refits in order instead)."""
        self.stop_at(epochs)
        code = self.process.wait()
        self.close()
        if code != 0 or not epochs or not self.out.is_file():
            return False
        load_weights(self.out, model)
        self.out.unlink()
        return True

    def __enter__(self) -> RefitAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def exitcode(self) -> int | None:
        return self.process.returncode

    def close(self) -> None:
        """End the child if it still runs (an error or Ctrl-C in the parent) and give the
        parent its threads back."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        torch.set_num_threads(self.threads)


def _reader(stream: Any) -> queue.Queue:
    """The parent's lines, parsed, on a queue a background thread fills (the training loop
    looks at it between steps without blocking)."""
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            kind, *args = line.split()
            messages.put((kind, *(int(a) for a in args)))
        messages.put(("eof",))  # the parent is gone (it closes stdin only after the end)

    threading.Thread(target=read, daemon=True).start()
    return messages


def _child(store: str, train: dict[str, Any], threads: int, messages: Any, out: str) -> None:
    """The refit, as ``loop._refit`` trains it, keeping the epochs the parent may keep."""
    torch.set_num_threads(threads)
    from unirec.train import loop  # the parent's process has it; this one imports it here

    cfg = TrainConfig.model_validate(train)
    device = torch.device("cpu")
    st = Store(store)
    model, inp = loop.refit_model(st, load_inputs(st), cfg, device)
    opt = loop.make_optimizer(model.parameters(), cfg, device)
    net, step, stream = loop._stepper(model, opt, inp, cfg, device, 0, 1, None)
    keep = _Keeper()

    def look() -> bool:  # read what the parent sent; True once the kept epoch is written
        keep.read(messages)
        if keep.stop is None:
            return False
        if keep.stop == 0 or keep.stop in keep.snapshots:
            if keep.stop:
                model.load_state_dict(keep.snapshots[keep.stop])
                save_weights(Path(out), model, {"epoch": str(keep.stop),
                                                "refit": "train+val"})
            return True
        return False

    done = 0
    while not look():
        if done >= cfg.epochs:  # the most the parent can keep: wait for its stop
            keep.read(messages, block=True)
            continue
        done += 1
        abort = _Abort(keep, messages, done)
        loop._train_epoch(net, step, stream, inp, done, device, 1, False, f"refit {done}",
                          abort=abort)
        if not abort.aborted:
            keep.add(done, model)


class _Abort:
    """Asked before each step of epoch ``running``: every few steps, whether the parent's
    stop named an epoch already kept, so the rest of this one is not wanted."""

    def __init__(self, keep: _Keeper, messages: Any, running: int) -> None:
        self.keep, self.messages, self.running = keep, messages, running
        self.calls, self.aborted = 0, False

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls % _POLL_STEPS == 0 and self.keep.stop_due(self.messages, self.running):
            self.aborted = True
        return self.aborted


class _Keeper:
    """The weights of each finished epoch that the parent's verdicts have not ruled out."""

    def __init__(self) -> None:
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.stop: int | None = None
        self.ruled_out: set[int] = set()

    def read(self, messages: Any, block: bool = False) -> None:
        """Take in every message waiting (with ``block``, wait for one first)."""
        while True:
            try:
                kind, *args = messages.get() if block else messages.get_nowait()
            except queue.Empty:
                return
            block = False
            if kind == "eof":  # no verdict will come: end without writing anything
                self.stop = 0 if self.stop is None else self.stop
            elif kind == "stop":
                self.stop = int(args[0])
            elif args[1]:  # a new best: every earlier epoch is out
                self.ruled_out.update(range(1, args[0]))
            else:
                self.ruled_out.add(args[0])
            self._prune()

    def stop_due(self, messages: Any, running: int) -> bool:
        """Inside epoch ``running``: whether the stop came for an epoch already kept."""
        self.read(messages)
        return self.stop is not None and self.stop < running and \
            (self.stop == 0 or self.stop in self.snapshots)

    def add(self, epoch: int, model: TwoTower) -> None:
        self.snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._prune()

    def _prune(self) -> None:
        for epoch in [e for e in self.snapshots if e in self.ruled_out and e != self.stop]:
            del self.snapshots[epoch]


def main(argv: list[str]) -> None:
    """``python -m unirec.train.refit_ahead STORE OUT THREADS TRAIN_JSON``; the parent's
    verdicts come on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    store, out, threads, train = argv
    _child(store, json.loads(train), int(threads), _reader(sys.stdin), out)


__all__ = ["RefitAhead", "wanted"]

if __name__ == "__main__":
    main(sys.argv[1:])
