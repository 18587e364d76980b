"""Shared fixtures: small documents with a known content, and ways to run the CLI."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from unirec.cli.main import cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE_DOC = {
    "user_data": [
        {
            "user_id": 1,
            "categorical": {"country": "US", "genres": ["drama", "comedy"]},
            "continuous": {"age": 30.0},
            "text": {"bio": "likes long walks"},
            "temporal": {"prev": [10, 11]},
            "image": {"pic": "img/u1.png"},
        },
        {"user_id": 2, "categorical": {"country": "FR", "genres": "drama"},
         "continuous": {"age": 41}},
        {"user_id": 3},
    ],
    "item_data": [
        {
            "item_id": 10,
            "categorical": {"cat": "x"},
            "continuous": {"price": 1.5},
            "text": {"title": "The first item"},
            "temporal": {"ph": [1.0, 2.5]},
        },
        {"item_id": 11, "categorical": {"cat": "y"}},
        {"item_id": 12},
    ],
    "interactions": [
        {"user_id": 1, "item_id": 10, "interaction_type": "view",
         "timestamp": "2024-01-01T00:00:00Z", "weight": 1.0},
        {"user_id": 2, "item_id": 11, "timestamp": 1700000000},
        {"user_id": 3, "item_id": 12, "timestamp": "2024-02-01", "rating": 4},
    ],
}


@pytest.fixture
def doc() -> dict:
    """A fresh deep copy of a small valid document that uses every feature group."""
    return copy.deepcopy(BASE_DOC)


def write_doc(path: Path, doc: dict | str) -> Path:
    """Write a document (a dict, or raw text for malformed JSON)."""
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def invoke(*args: str | Path, input: str | None = None):
    """Run the CLI in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=True)


def run_unirec(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m unirec`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "unirec", *map(str, args)],
        capture_output=True, text=True, **kwargs,
    )


def popen_unirec(*args: str | Path) -> subprocess.Popen:
    """``python -m unirec`` as a running process (pipes, text) that a test can Ctrl-C:
    SIGINT at its default in the child. A shell that starts ``make test`` in the background
    (``&``, nohup) hands its children SIGINT ignored, and a Python started so never raises
    KeyboardInterrupt: the Ctrl-C tests would then test the launcher, not unirec."""
    return subprocess.Popen([sys.executable, "-m", "unirec", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@contextlib.contextmanager
def serve_on_loopback(app, timeout: float = 60) -> Iterator[str]:
    """uvicorn serving ``app`` in a thread on a free 127.0.0.1 port; yields its base URL and
    stops the server on exit. Every HTTP test goes through real loopback requests this way."""
    import uvicorn  # the serve extra: imported only by tests that serve

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def one_error_line(result, *needles: str) -> str:
    """The one line a refused run printed: exit code 1, stderr a single ``Error: ...`` line
    holding every needle. ``result`` is click's (``invoke``) or a subprocess's."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert code == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``: a byte-for-byte snapshot."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """A featurized synthetic dataset with planted structure in every feature kind."""
    from unirec import featurize
    from unirec.config import load_config
    from unirec.datasets import synthesize, write_document

    root = tmp_path_factory.mktemp("synthetic")
    write_document(synthesize(300, 150, 9000, seed=7, images_dir=root / "images"),
                   root / "data.json")
    # income bucketized: every encoder op has a feature here (test_encoder_contract)
    cfg = load_config(overrides=['features.fields={"user.continuous.income": '
                                 '{"op": "bucketize", "buckets": 5}}'])
    featurize(root / "data.json", root / "store", cfg)
    return root / "store"


@pytest.fixture(scope="session")
def holdout_store(tmp_path_factory) -> Path:
    """A small synthetic store (no images) with 20% of the items held out of training: their
    interactions are in ``holdout.csv`` and their ids in ``new_items.csv`` beside the store.
    Cheap to fit (a two-epoch fit takes a second or two). Copy it before writing."""
    from unirec import featurize
    from unirec.datasets import synthesize, write_document, write_holdout

    root = tmp_path_factory.mktemp("holdout")
    data = synthesize(80, 40, 1600, seed=3, holdout_items=0.2)
    write_document(data, root / "data.json")
    write_holdout(data, root)
    featurize(root / "data.json", root / "store")
    return root / "store"


@pytest.fixture(scope="session")
def fitted_store(tmp_path_factory, synthetic_store) -> Path:
    """A copy of ``synthetic_store`` with a small model fitted (3 epochs, dim 32): what the
    serving tests query. Retrieval only (no ranking stage), so answers are the dot products
    those tests check; ``ranked_store`` has both stages. Read-only for its users: copy it
    before writing."""
    from unirec import fit
    from unirec.config import Config, RankConfig, TrainConfig

    store = copy_store(synthetic_store, tmp_path_factory.mktemp("fitted") / "store")
    fit(store, Config(train=TrainConfig(epochs=3, dim=32, batch_size=256,
                                        rank=RankConfig(enabled=False))), progress=False)
    return store


@pytest.fixture(scope="session")
def ranked_store(tmp_path_factory, synthetic_store) -> Path:
    """``synthetic_store`` fitted through ``unirec fit`` with both stages: retrieval (3
    epochs, dim 32) and the ranking stage (DCN, kept whatever validation says: this store
    is too small for the ranker to beat retrieval by train.rank.min_z standard errors, and
    these tests are about serving it) with an interaction_type head, fit on the training
    samples. Read-only for its users: copy it before writing."""
    store = copy_store(synthetic_store, tmp_path_factory.mktemp("ranked") / "store")
    out = invoke("fit", "--store", store, "--epochs", "3", "--set", "train.dim=32",
                 "--set", "train.batch_size=256", "--set", "train.rank.fit_on=train",
                 "--set", "train.rank.enabled=true",
                 "--set", "train.rank.batch_size=256", "--set",
                 'train.rank.heads={"interaction_type": 0.3}')
    assert out.exit_code == 0, out.output
    return store


def copy_store(src: Path, dst: Path) -> Path:
    """A private copy of a store, for tests that write a model into it."""
    import shutil

    shutil.copytree(src, dst)
    return dst


def checkerboard_document(n_users: int = 240, n_items: int = 160, blocks: int = 4,
                          per_user: int = 24, seed: int = 0) -> dict:
    """Users and items in ``blocks`` groups; users only ever meet items of their own group.

    The known right answer: rank your own block's items first. Popularity cannot know
    blocks, so a model that learns them wins by a factor of about ``blocks``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    users = [{"user_id": u, "categorical": {"group": f"g{u % blocks}"}} for u in range(n_users)]
    items = [{"item_id": i, "categorical": {"group": f"g{i % blocks}"}} for i in range(n_items)]
    inter = []
    for u in range(n_users):
        own = np.arange(u % blocks, n_items, blocks)
        for t, i in enumerate(rng.choice(own, size=per_user, replace=False)):
            inter.append({"user_id": u, "item_id": int(i), "timestamp": 1_700_000_000 + t})
    return {"user_data": users, "item_data": items, "interactions": inter}


@pytest.fixture(scope="session")
def checkerboard_store(tmp_path_factory) -> Path:
    from unirec import featurize

    root = tmp_path_factory.mktemp("checkerboard")
    write_doc(root / "data.json", checkerboard_document())
    featurize(root / "data.json", root / "store")
    return root / "store"
