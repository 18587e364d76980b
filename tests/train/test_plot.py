"""unirec.model.plot: a valid PNG from metrics.jsonl, including a one-epoch run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from unirec.model.plot import plot_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return path


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # two panels with axes, lines and text, not an empty canvas
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > height > 100
    assert not list(path.parent.glob(".*.tmp"))


def test_plot_several_epochs(tmp_path: Path):
    rows = [
        {"epoch": e, "train_loss": 3.2 / e, "val_loss": 3.5 / e, "val_recall@10": 0.05 * e,
         "val_ndcg@10": 0.03 * e, "seconds": 4.1, "lr": 1e-3}
        for e in range(1, 6)
    ]
    rows[2].pop("val_ndcg@10")  # an epoch without a metric leaves a gap, not an error
    png = tmp_path / "out" / "metrics.png"
    plot_metrics(_write(tmp_path / "metrics.jsonl", rows), png)
    _check_png(png)


def test_plot_single_epoch(tmp_path: Path):
    jsonl = _write(tmp_path / "metrics.jsonl",
                   [{"epoch": 1, "train_loss": 3.2, "val_recall@10": 0.1, "seconds": 4.1}])
    plot_metrics(jsonl, tmp_path / "metrics.png")
    _check_png(tmp_path / "metrics.png")


def test_plot_without_validation(tmp_path: Path):
    jsonl = _write(tmp_path / "metrics.jsonl", [{"epoch": 1, "train_loss": 1.0},
                                                {"epoch": 2, "train_loss": 0.5}])
    plot_metrics(jsonl, tmp_path / "metrics.png")
    _check_png(tmp_path / "metrics.png")


def test_plot_rejects_empty_and_bad_lines(tmp_path: Path):
    with pytest.raises(ValueError, match="no metrics"):
        plot_metrics(_write(tmp_path / "empty.jsonl", []), tmp_path / "a.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        plot_metrics(bad, tmp_path / "b.png")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
