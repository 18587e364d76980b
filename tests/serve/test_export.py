"""ONNX export of the towers: onnxruntime must give torch's vectors on real feature rows."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import invoke

from unirec.model.restore import load_model, user_histories
from unirec.serve.export import example_inputs, export_onnx


@pytest.fixture(scope="module")
def exported(fitted_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(fitted_store, out)


def _run(path, spec_inputs, tower, idx, history):
    """Feed ``idx``'s real rows by the names towers.json lists."""
    names = list(tower.columns) + ["index"] * (tower.ids is not None) + \
        ["history"] * (tower.history is not None)
    tensors = dict(zip(names, example_inputs(tower, idx, history), strict=True))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in spec_inputs]
    return session.run(["embedding"], {i["name"]: tensors[i["name"]].numpy()
                                       for i in spec_inputs})[0]


@pytest.mark.parametrize("side", ["user", "item"])
@pytest.mark.parametrize("batch", [37, 1])  # neither is the traced batch of 2
def test_onnx_matches_torch_on_real_rows(fitted_store, exported, side, batch) -> None:
    out, spec = exported
    model = load_model(fitted_store)
    tower = model.user if side == "user" else model.item
    histories = torch.from_numpy(user_histories(fitted_store))
    n = len(histories) if side == "user" else model.item_table.num_embeddings
    idx = torch.randperm(n - 1, generator=torch.Generator().manual_seed(0))[:batch] + 1
    idx[0] = 0 if batch > 1 else idx[0]  # a new entity too: no id embedding
    hist = histories[idx] if side == "user" else None
    got = _run(out / spec["towers"][side]["file"], spec["towers"][side]["inputs"], tower, idx,
               hist)
    with torch.no_grad():
        want = tower.encode(tower.gather(idx), idx, hist).numpy()
    assert got.shape == (batch, spec["dim"]) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    fitted = np.load(fitted_store / "model" / f"{side}_embeddings.npy")
    np.testing.assert_allclose(got[1:], fitted[idx[1:].numpy()], atol=1e-4)


def test_towers_json_describes_the_graphs(exported) -> None:
    out, spec = exported
    assert json.loads((out / "towers.json").read_text()) == spec
    user = {i["name"]: i for i in spec["towers"]["user"]["inputs"]}
    assert user["history"]["dtype"] == "int64" and user["history"]["shape"][0] == "batch"
    assert user["index"]["shape"] == ["batch"]
    assert "index" in {i["name"] for i in spec["towers"]["item"]["inputs"]}
    assert "history" not in {i["name"] for i in spec["towers"]["item"]["inputs"]}
    assert spec["towers"]["item"]["output"]["shape"] == ["batch", spec["dim"]]


def test_export_command(fitted_store, tmp_path) -> None:
    result = invoke("export", "--onnx", tmp_path / "onnx", "--store", fitted_store)
    assert result.exit_code == 0, result.output
    assert "user tower" in result.output and "item tower" in result.output
    for name in ("user_tower.onnx", "item_tower.onnx", "towers.json"):
        assert (tmp_path / "onnx" / name).is_file()
    missing = invoke("export", "--onnx", tmp_path / "x", "--store", tmp_path / "nothing")
    assert missing.exit_code == 1 and "no feature store" in missing.output
