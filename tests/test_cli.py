"""The command line as a user meets it: help, version, a real process end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from conftest import invoke, run_unirec

from unirec.cli.main import cli
from unirec.version import __version__


def test_help_lists_the_verbs() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in cli.commands:
        assert f"  {verb} " in result.stdout, verb
        usage = invoke(verb, "--help")
        assert usage.exit_code == 0 and f" {verb} [OPTIONS]" in usage.stdout, verb
    assert __version__ in invoke("--version").stdout


def test_synthetic_then_featurize_then_sql_in_real_processes(tmp_path) -> None:
    gen = run_unirec("datasets", "synthetic", "--users", "50", "--items", "30",
                     "--interactions", "600", "--images", "--out", tmp_path / "data")
    assert gen.returncode == 0, gen.stderr
    doc = tmp_path / "data" / "data.json"
    assert gen.stdout.strip() == str(doc)
    assert len(list((tmp_path / "data" / "images").glob("*.png"))) == 30
    feat = run_unirec("featurize", doc, "--store", tmp_path / "store")
    assert feat.returncode == 0, feat.stderr
    assert feat.stdout.startswith("featurized 50 users, 30 items, 600 interactions into")
    out = run_unirec("sql", "SELECT count(DISTINCT user_id) AS u, count(*) AS n FROM "
                     "interactions", "--store", tmp_path / "store", "--format", "json")
    users = {str(r["user_id"]) for r in json.loads(doc.read_text())["interactions"]}
    assert json.loads(out.stdout) == [{"u": len(users), "n": 600}]


def test_folder_formats_from_the_generator(tmp_path) -> None:
    for fmt in ("jsonl", "parquet"):
        gen = invoke("datasets", "synthetic", "--users", "20", "--items", "10",
                     "--interactions", "100", "--format", fmt, "--out", tmp_path / fmt)
        assert gen.exit_code == 0, gen.output
        feat = invoke("featurize", tmp_path / fmt, "--store", tmp_path / f"s-{fmt}")
        assert feat.exit_code == 0, feat.output
        assert "100 interactions" in feat.stdout


def test_missing_input_is_one_line(tmp_path) -> None:
    proc = run_unirec("featurize", tmp_path / "nope.json", "--store", tmp_path / "s")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: input {str(tmp_path / 'nope.json')!r} does not exist"]


# ---- every verb, end to end, on one small store --------------------------------------------
# A verb added to the CLI without a check here fails test_every_verb_has_a_check.

@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """`datasets synthetic`, `featurize` and `fit` through the CLI: what the other verbs query."""
    root = tmp_path_factory.mktemp("verbs")
    out = {"root": root, "store": root / "store", "data": root / "data" / "data.json"}
    out["datasets"] = invoke("datasets", "synthetic", "--users", "60", "--items", "30",
                             "--interactions", "1200", "--seed", "5", "--out", root / "data")
    out["featurize"] = invoke("featurize", out["data"], "--store", out["store"])
    out["fit"] = invoke("fit", "--store", out["store"], "--epochs", "2", "--set", "train.dim=16",
                        "--set", "train.batch_size=128")
    doc = json.loads(out["data"].read_text())
    out["doc"] = doc
    out["user"] = str(doc["interactions"][0]["user_id"])
    out["seen"] = {str(r["item_id"]) for r in doc["interactions"]
                   if str(r["user_id"]) == out["user"]}
    out["item"] = str(doc["item_data"][0]["item_id"])
    return out


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def check_datasets(m: dict) -> None:
    assert m["datasets"].exit_code == 0, m["datasets"].output
    assert [len(m["doc"][s]) for s in ("user_data", "item_data", "interactions")] == [60, 30, 1200]


def check_featurize(m: dict) -> None:
    assert m["featurize"].exit_code == 0, m["featurize"].output
    assert m["featurize"].stdout.startswith("featurized 60 users, 30 items, 1200 interactions")


def check_fit(m: dict) -> None:
    assert m["fit"].exit_code == 0, m["fit"].output
    assert (m["store"] / "model" / "model.safetensors").is_file()
    assert json.loads((m["store"] / "model" / "config.json").read_text())["train"]["dim"] == 16


def check_tables(m: dict) -> None:
    rows = _json(invoke("tables", "--counts", "--format", "json", "--store", m["store"]))
    counts = {r["table"]: r["rows"] for r in rows}
    assert counts["interactions"] == 1200 and counts["user_embeddings"] == 60, counts


def check_schema(m: dict) -> None:
    rows = _json(invoke("schema", "interactions", "--format", "json", "--store", m["store"]))
    assert {"user_id", "item_id", "timestamp"} <= {r["column"] for r in rows}, rows


def check_sql(m: dict) -> None:
    rows = _json(invoke("sql", "SELECT count(*) AS n FROM interactions WHERE user_id = "
                        f"'{m['user']}'", "--format", "json", "--store", m["store"]))
    n = sum(str(r["user_id"]) == m["user"] for r in m["doc"]["interactions"])
    assert rows == [{"n": n}]


def check_recommend(m: dict) -> None:
    rows = _json(invoke("recommend", "--user", m["user"], "-k", "5", "--format", "json",
                        "--store", m["store"]))
    items = [str(r["item_id"]) for r in rows]
    assert len(items) == 5 and not set(items) & m["seen"], (items, m["seen"])


def check_similar(m: dict) -> None:
    rows = _json(invoke("similar", "--item", m["item"], "-k", "3", "--format", "json",
                        "--store", m["store"]))
    assert len(rows) == 3 and m["item"] not in {str(r["item_id"]) for r in rows}


def check_embed(m: dict) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    summary = json.loads((m["store"] / "model" / "config.json").read_text())["summary"]
    extra = summary["new_item_affinity"]["columns"]  # the category affinity's (tags)
    for side, n in (("users", 60), ("items", 30)):
        path = m["root"] / f"{side}.parquet"
        assert invoke("embed", side, "--out", path, "--store", m["store"]).exit_code == 0
        vectors = np.stack(pq.read_table(path).column("embedding").to_numpy(zero_copy_only=False))
        assert vectors.shape == (n, 16 + extra)
        assert np.allclose(np.linalg.norm(vectors[:, :16], axis=1), 1, atol=1e-4)
        if side == "items":  # every item is trained here: their affinity columns are zero
            assert not vectors[:, 16:].any()


def check_score(m: dict) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    pick = [str(i["item_id"]) for i in m["doc"]["item_data"][:3]]
    rows = _json(invoke("score", "--user", m["user"], "--item", ",".join(pick), "--format",
                        "json", "--store", m["store"]))
    # the score is the cosine of the vectors `embed` writes
    for side in ("users", "items"):
        invoke("embed", side, "--out", m["root"] / f"s-{side}.parquet", "--store", m["store"])
    users, items = (pq.read_table(m["root"] / f"s-{s}.parquet").to_pylist()
                    for s in ("users", "items"))
    u = np.asarray(next(r["embedding"] for r in users if str(r["user_id"]) == m["user"]))
    vec = {str(r["item_id"]): np.asarray(r["embedding"]) for r in items}
    assert [str(r["item_id"]) for r in rows] == pick
    for r in rows:
        assert abs(r["score"] - float(vec[str(r["item_id"])] @ u)) < 1e-4, r


def check_evaluate(m: dict) -> None:
    rows = _json(invoke("evaluate", "-k", "5", "--format", "json", "--store", m["store"]))
    metrics = rows[0] if isinstance(rows, list) else rows
    assert 0.0 <= metrics["recall@5"] <= 1.0 and metrics["users"] > 0, metrics


def check_explain(m: dict) -> None:
    top = [str(r["item_id"]) for r in _json(invoke(
        "recommend", "--user", m["user"], "-k", "2", "--format", "json", "--store", m["store"]))]
    rows = _json(invoke("explain", "--user", m["user"], "-k", "2", "--format", "json",
                        "--store", m["store"]))
    assert sorted({str(r["item_id"]) for r in rows}) == sorted(top), rows


def check_export(m: dict) -> None:
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    result = invoke("export", "--onnx", m["root"] / "onnx", "--store", m["store"])
    assert result.exit_code == 0, result.output
    assert {"user_tower.onnx", "item_tower.onnx", "towers.json"} <= {
        p.name for p in (m["root"] / "onnx").iterdir()}


def check_tune(m: dict) -> None:
    pytest.importorskip("optuna", reason="the tune extra is not installed")
    out = m["root"] / "tuned.toml"
    result = invoke("tune", "--trials", "1", "--set", "train.epochs=1", "--set",
                    "train.dim=8", "--out", out, "--store", m["store"])
    assert result.exit_code == 0, result.output
    assert "[train]" in out.read_text() and "dim = 8" in out.read_text()


def check_serve(m: dict) -> None:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = m["root"] / "serve.log"
    with log.open("w") as err:
        server = subprocess.Popen([sys.executable, "-m", "unirec", "serve", "--no-cold",
                                   "--port", str(port), "--store", str(m["store"])],
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        base, deadline, body = f"http://127.0.0.1:{port}", time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and server.poll() is None:
            try:
                body = httpx.get(f"{base}/recommend", params={"user": m["user"], "k": 5}).json()
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert body is not None, log.read_text()
    cli_rows = _json(invoke("recommend", "--user", m["user"], "-k", "5", "--format", "json",
                            "--store", m["store"]))
    assert [r["item_id"] for r in body["items"]] == [r["item_id"] for r in cli_rows]


CHECKS = {name.removeprefix("check_"): fn for name, fn in dict(globals()).items()
          if name.startswith("check_")}


def test_every_verb_has_a_check() -> None:
    assert set(CHECKS) == set(cli.commands)


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(CHECKS))
def test_verb_end_to_end(verb: str, made: dict) -> None:
    CHECKS[verb](made)
