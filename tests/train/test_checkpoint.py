"""unirec.model.checkpoint: bit-identical resume, pickle-free files, tied weights."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from unirec.model import checkpoint
from unirec.model.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights


class Tiny(torch.nn.Module):
    """Parameters, buffers (BatchNorm), dropout (draws from torch's RNG), a frozen weight."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.3)
        )
        self.head = torch.nn.Linear(8, 1)
        self.frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1) + self.frozen.sum()


def _make(seed: int) -> tuple[Tiny, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Tiny()
    groups = [
        {"params": model.body.parameters()},
        {"params": model.head.parameters(), "lr": 3e-3, "weight_decay": 0.0},
        {"params": [model.frozen]},
    ]
    return model, torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.95))


def _steps(model: Tiny, opt: torch.optim.Optimizer, n: int) -> None:
    data = torch.Generator().manual_seed(7)
    x, y = torch.randn(16, 4, generator=data), torch.randn(16, generator=data)
    model.train()
    for _ in range(n):
        # Every global RNG feeds the step, so each must be restored for an identical resume.
        jitter = torch.randn(16, 4) * 0.01 + np.random.random() * 0.01 + random.random() * 0.01
        loss = torch.nn.functional.mse_loss(model(x + jitter), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _seed_all(0)
    model, opt = _make(0)
    _steps(model, opt, 3)
    extra = {"epoch": 3, "best_metric": 0.125, "betas": (1, 2), "nan": float("nan")}
    save_checkpoint(tmp_path / "ckpt", model, opt, extra)
    _steps(model, opt, 3)
    a = {k: v.clone() for k, v in model.state_dict().items()}

    _seed_all(123)  # a different process state; loading must undo it
    fresh, fresh_opt = _make(1)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    got = load_checkpoint(tmp_path / "ckpt", fresh, fresh_opt)
    monkeypatch.undo()
    assert got["epoch"] == 3 and got["best_metric"] == 0.125 and got["betas"] == (1, 2)
    assert np.isnan(got["nan"])

    _steps(fresh, fresh_opt, 3)
    b = fresh.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert fresh_opt.param_groups[1]["lr"] == 3e-3
    assert fresh_opt.param_groups[0]["betas"] == (0.8, 0.95)


def test_file_layout(tmp_path: Path):
    model, opt = _make(0)
    _steps(model, opt, 1)
    save_checkpoint(tmp_path, model, opt, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json",
                                                          "checkpoint.safetensors"]
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("optim.0.step").shape == ()
        assert f.get_tensor("rng.torch").dtype == torch.uint8
    assert {"model.body.0.weight", "model.body.1.running_mean", "model.head.bias",
            "optim.0.exp_avg", "optim.5.exp_avg_sq", "rng.torch"} <= keys
    assert not any(k.startswith("optim.6.") for k in keys)  # the frozen weight has no state
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())
    assert manifest["extra"] == {"epoch": 1}
    assert manifest["param_groups"][1]["params"] == [4, 5]
    assert "python" in manifest["rng"] and "numpy" in manifest["rng"]


def test_torn_checkpoint_is_refused(tmp_path: Path):
    model, opt = _make(0)
    save_checkpoint(tmp_path, model, opt, {"epoch": 1})
    old_manifest = (tmp_path / "checkpoint.json").read_text()
    save_checkpoint(tmp_path, model, opt, {"epoch": 2})
    (tmp_path / "checkpoint.json").write_text(old_manifest)  # crash between the two renames
    with pytest.raises(ValueError, match="interrupted"):
        load_checkpoint(tmp_path, model, opt)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing", model, opt)


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight


def test_weights_with_tied_tensors(tmp_path: Path):
    torch.manual_seed(0)
    model = Tied()
    path = tmp_path / "model" / "model.safetensors"
    save_weights(path, model, {"unirec_version": "0.1.0"})
    torch.manual_seed(1)
    fresh = Tied()
    assert load_weights(path, fresh) == {"unirec_version": "0.1.0"}
    assert torch.equal(fresh.emb.weight, model.emb.weight)
    assert fresh.out.weight is fresh.emb.weight  # still tied
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]


def test_no_unpickling_in_source():
    source = Path(checkpoint.__file__).read_text()
    assert "torch.load(" not in source and "import pickle" not in source
