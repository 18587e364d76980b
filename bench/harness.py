"""What every benchmark shares: run a child process, measure it, describe the machine.

Why: PROTOCOL.md ("Speed and scale") wants wall time and peak memory of whole processes,
measured the same way for unirec and its peers, on machines that are shared and noisy. So each
side runs as a child; peak RSS is the larger of the kernel's rusage maxrss and a polled sum over
the process tree; and each run records how busy the machine was with *other* work while it ran
(``others_cores``, the harness's own polling excluded) next to the 1-minute load average, so a
slow run can be told from a busy box.
A child that runs past its time or memory budget is killed and reported, never waited on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """One child process: what it cost, how busy the machine was, and how it ended."""

    wall_s: float
    peak_rss_mb: float
    rc: int
    tail: str  # last lines of stdout+stderr, kept to explain failures (and to read counts)
    cpu_s: float = 0.0  # the child's user + system CPU seconds
    others_cores: float = 0.0  # CPU busy with other processes during the run, in cores
    load1: float = 0.0  # 1-minute load average when the run started
    killed: str | None = None  # why the harness killed it (timeout, memory), None otherwise
    harness_cores: float = 0.0  # the measuring process's own CPU (RSS polling), in cores


def _busy_s() -> float:
    """CPU seconds spent busy so far, all cores together (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _kill_tree(ps: psutil.Process) -> None:
    """Kill the child we started and its descendants, by process id."""
    try:
        victims = [*ps.children(recursive=True), ps]
    except psutil.Error:
        victims = [ps]
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass


def measure(cmd: list[str], poll_s: float = 0.01, timeout_s: float | None = None,
            max_rss_mb: float | None = None, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> Run:
    """Run ``cmd`` as a child and measure it; kill it past ``timeout_s`` or ``max_rss_mb``.
    ``cwd`` (default: this checkout) is where ``python -m`` finds its modules."""
    load1 = os.getloadavg()[0]
    # A forked child starts with its parent's RSS high-water mark in ru_maxrss (Linux), so a
    # big benchmark driver would leak its own peak into a small child's figure.
    parent_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile() as out:
        busy0, own0, start = _busy_s(), time.process_time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
        polled, killed, tree, polls = 0, None, [], 0
        try:
            ps = psutil.Process(proc.pid)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    if polls % 25 == 0:  # a /proc scan costs ~2 ms: refresh the tree at 4 Hz
                        tree = [ps, *ps.children(recursive=True)]
                    polled = max(polled, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    polls = -1  # a process left (or the child is exiting): rescan next time
                polls += 1
                if killed is None and max_rss_mb and polled > max_rss_mb * 2**20:
                    killed = f"peak RSS passed {max_rss_mb:,.0f} MB"
                elif killed is None and timeout_s and time.perf_counter() - start > timeout_s:
                    killed = f"still running after {timeout_s:,.0f} s"
                if killed:
                    _kill_tree(ps)
                time.sleep(poll_s)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - start
        busy, own = _busy_s() - busy0, time.process_time() - own0
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = "\n".join(out.read().decode(errors="replace").splitlines()[-15:])
    cpu = usage.ru_utime + usage.ru_stime
    # ru_maxrss (KiB on Linux) catches spikes between polls, but only when it is the child's
    # own: near the parent's high-water mark (which grows a little while spawning) it is the
    # inherited figure, and the polls have to do.
    own_peak = usage.ru_maxrss > parent_peak_kib * 1.1 + 32 * 1024
    peak = max(polled, usage.ru_maxrss * 1024) if own_peak else polled
    return Run(round(wall, 3), round(peak / 2**20, 1), rc, tail, round(cpu, 2),
               round(max(0.0, busy - cpu - own) / wall, 2), round(load1, 2), killed,
               round(own / wall, 3))


def latency_ms(seconds: list[float], digits: int = 3) -> dict[str, float]:
    """p50/p99 in milliseconds and the count of a list of per-query wall times (seconds)."""
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), digits),
            "p99_ms": round(float(np.percentile(ms, 99)), digits), "n": len(ms)}


@contextlib.contextmanager
def unirec_serve(store: Path, env: dict[str, str] | None = None,
                 wait_s: float = 60) -> Iterator[str]:
    """A ``unirec serve`` child process on a free loopback port, answering ``GET /health``;
    yields its base URL and stops it on exit. HTTP figures time a real server process."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = str(Path(sys.executable).parent / "unirec")
    server = subprocess.Popen([cli, "serve", "--port", str(port), "--store", str(store)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        with httpx.Client(base_url=base, timeout=10) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def last_json(tail: str) -> dict[str, Any] | None:
    """The last line of a child's output that parses as a JSON object (its counts), if any."""
    import json

    for line in reversed(tail.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def _version(dist: str) -> str | None:
    """A distribution's version without importing it (torch takes seconds to import)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What the numbers were measured on, so results files can be compared honestly."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "unirec"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    commit += "+uncommitted unirec changes" if dirty else ""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    cpu = next((line.split(":", 1)[1].strip() for line in info
                if line.startswith("model name")), platform.processor())
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": commit,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            **{name: _version(name) for name in ("unirec", "duckdb", "polars", "pyarrow",
                                                 "pandas", "numpy", "torch",
                                                 "sentence-transformers")}}


def save_results(report: dict[str, Any], name: str, out: Path | None = None) -> Path:
    """A standalone benchmark's JSON: ``out``, or ``bench/results/<name>-<date>.json``."""
    import datetime as dt
    import json

    out = out or ROOT / "bench" / "results" / f"{name}-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return out
