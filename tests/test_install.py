"""The install stories, each in a real, separate venv (built and cached by `make venvs`):

- a serving install: the current wheel with only ``[serve]``, at the lowest versions the
  declared ranges allow (constraints-lowest.txt), and no torch. It featurizes a document
  without text or images, refuses `fit` and text fields with one line naming the extra,
  and answers `unirec recommend`, `unirec sql` and ``GET /recommend`` from a model that
  the full install fitted: the lowest-versions smoke run featurize -> fit -> recommend -> sql.
- the oldest DuckDB the store promises (``unirec.store.OLDEST_DUCKDB``) opens
  ``features.duckdb`` and reads every table.

Without the venvs these tests skip and say how to build them; `make test` builds them first.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import one_error_line

from unirec.store import OLDEST_DUCKDB, STORAGE_VERSION, Store

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"

pytestmark = pytest.mark.slow


def _venv_python(name: str) -> Path:
    venv = VENVS / name
    if not (venv / ".installed").is_file():
        pytest.skip(f".venvs/{name} is absent: `make venvs` builds it (`make test` does)")
    return venv / "bin" / "python"


def _env() -> dict[str, str]:
    """The venv must see only what is installed in it: no PYTHONPATH into the worktree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1"}


def _run(python: Path, *args: str | Path, check: bool = True, **kwargs
         ) -> subprocess.CompletedProcess:
    out = subprocess.run([str(python), *map(str, args)], capture_output=True, text=True,
                         env=_env(), timeout=300, cwd=VENVS, **kwargs)
    if check and out.returncode != 0:
        raise AssertionError(f"{args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def serve_python(tmp_path_factory) -> Path:
    """The cached serve venv with the wheel of *this* checkout reinstalled (no deps: they
    were resolved from the wheel's metadata when the venv was built)."""
    python = _venv_python("serve")
    wheels = tmp_path_factory.mktemp("wheel")
    _run(Path(sys.executable), "-m", "pip", "wheel", "-q", "--no-deps", *_no_isolation(),
         "-w", wheels, ROOT)
    wheel = next(wheels.glob("unirec-*.whl"))
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel)
    _run(python, "-m", "pip", "check")  # every declared dependency is there, at some version
    return python


def _no_isolation() -> list[str]:
    """Build with this venv's setuptools when it is new enough: seconds saved per run."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        return []
    return ["--no-build-isolation"] if major >= 77 else []


def _unirec(python: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run(python, "-m", "unirec", *args, check=check)



def test_serve_install_has_no_torch_and_answers(serve_python, tmp_path):
    from unirec import fit
    from unirec.config import Config, TrainConfig
    from unirec.datasets import synthesize, write_document

    where = _run(serve_python, "-c", "import unirec, importlib.util as u; print(unirec.__file__);"
                 " print([m for m in ('torch', 'torchvision', 'timm', 'sentence_transformers',"
                 " 'matplotlib') if u.find_spec(m)])").stdout.splitlines()
    assert where[0].startswith(str(VENVS / "serve")), where  # the wheel, not the worktree
    assert where[1] == "[]", f"the serve install has {where[1]}"

    write_document(synthesize(200, 80, 4000, seed=3), tmp_path / "full.json")
    doc = json.loads((tmp_path / "full.json").read_text())
    for section in ("user_data", "item_data"):
        for record in doc[section]:
            record.pop("text", None)
            record.pop("image", None)
    (tmp_path / "core.json").write_text(json.dumps(doc))
    store = tmp_path / "store"

    one_error_line(_unirec(serve_python, "featurize", tmp_path / "full.json", "--store",
                           tmp_path / "other", check=False), "text fields", "unirec[train]")
    _unirec(serve_python, "featurize", tmp_path / "core.json", "--store", store)
    one_error_line(_unirec(serve_python, "fit", "--store", store, check=False),
                   "`unirec fit`", "unirec[train]")

    fit(store, Config(train=TrainConfig(epochs=2, dim=16, batch_size=256)), progress=False)

    user = str(doc["user_data"][0]["user_id"])
    cli = json.loads(_unirec(serve_python, "recommend", "--user", user, "-k", "5",
                             "--format", "json", "--store", store).stdout)
    assert len(cli) == 5
    n = json.loads(_unirec(serve_python, "sql", "SELECT count(*) AS n FROM item_embeddings",
                           "--format", "json", "--store", store).stdout)
    assert n == [{"n": len(doc["item_data"])}]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(serve_python), "-m", "unirec", "serve", "--store", str(store), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), cwd=VENVS)
    try:
        answer = _get(f"http://127.0.0.1:{port}/recommend?user={user}&k=5", server)
        post = urllib.request.Request(
            f"http://127.0.0.1:{port}/recommend", data=b'{"user": {"history": []}}',
            headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=30)
        assert refused.value.code == 400
        assert "unirec[train]" in json.loads(refused.value.read())["error"]
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert "cold start is off" in log and "unirec[train]" in log, log
    assert [r["item_id"] for r in answer["items"]] == [r["item_id"] for r in cli]


def _get(url: str, server: subprocess.Popen, wait: float = 60.0) -> dict:
    """GET ``url`` once the server listens (it imports FastAPI and loads the model first)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                return json.loads(resp.read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_oldest_duckdb_reads_every_table(fitted_store):
    python = _venv_python(f"duckdb-{OLDEST_DUCKDB}")
    script = (
        "import duckdb, json, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "tables = [t for (t,) in con.execute(\"SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'main'\").fetchall()]\n"
        "rows = {t: len(con.execute(f'SELECT * FROM \"{t}\"').fetchall()) for t in tables}\n"
        "print(json.dumps({'version': duckdb.__version__, 'rows': rows}))\n"
    )
    out = json.loads(_run(python, "-c", script, fitted_store / "features.duckdb").stdout)
    assert out["version"] == OLDEST_DUCKDB
    st = Store(fitted_store)
    assert out["rows"] == st.counts()
    assert {"samples", "user_embeddings", "item_embeddings", "text_embeddings"} <= set(out["rows"])
    assert st.manifest["duckdb_storage"]["version"] == STORAGE_VERSION + "+"
