"""The CUDA path: bf16 autocast and torch.compile. Skipped where no GPU is present."""

from __future__ import annotations

import pytest
import torch
from conftest import copy_store

from unirec.config import Config, TrainConfig
from unirec.train.loop import fit

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_cuda_bf16_compiled_training_learns(tmp_path, checkerboard_store) -> None:
    store = copy_store(checkerboard_store, tmp_path / "store")
    cfg = Config(train=TrainConfig(device="cuda", precision="bf16", compile=True, epochs=5,
                                   batch_size=512))
    summary = fit(store, cfg, progress=False)
    assert summary["best"]["val_recall@10"] > 0.2
