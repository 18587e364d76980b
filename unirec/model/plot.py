"""A picture of a training run: loss and validation metrics per epoch, from metrics.jsonl.

People judge convergence and overfitting faster from a curve than from a table. matplotlib
is imported only inside :func:`plot_metrics`, so ``fit`` pays for it once, at the end, and
nothing else does.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from unirec.store.atomic import write_file

_SKIP = {"epoch", "seconds", "step", "lr"}


def _read(jsonl: Path) -> list[dict]:
    """The records of a metrics.jsonl file; blank lines ignored."""
    rows = []
    with open(jsonl) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{jsonl}:{number}: not a JSON object ({e.msg})") from e
    return rows


def _series(rows: list[dict], key: str) -> list[float]:
    """One column as floats, NaN where an epoch lacks it (so lines show the gap)."""
    out = []
    for row in rows:
        value = row.get(key)
        out.append(float(value) if isinstance(value, int | float) else math.nan)
    return out


def plot_metrics(jsonl: Path, png: Path) -> None:
    """Draw ``jsonl``'s training curves into ``png``: loss (left) and validation metrics (right).

    Loss panel: every numeric key containing ``loss``. Metrics panel: every other numeric
    ``val_*`` key (``val_recall@10``, ``val_ndcg@10``, ...). The PNG is written atomically.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch an interactive session's backend
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = _read(Path(jsonl))
    if not rows:
        raise ValueError(f"{jsonl}: no metrics to plot")
    epochs = [row.get("epoch", i) for i, row in enumerate(rows, start=1)]
    keys = list(dict.fromkeys(
        k for row in rows for k, v in row.items()
        if k not in _SKIP and isinstance(v, int | float) and not isinstance(v, bool)
    ))
    losses = [k for k in keys if "loss" in k]
    metrics = [k for k in keys if k.startswith("val_") and k not in losses]

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    panels = ((fig.add_subplot(1, 2, 1), losses, "loss"),
              (fig.add_subplot(1, 2, 2), metrics, "validation metrics"))
    for ax, names, title in panels:
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        for name in names:
            ax.plot(epochs, _series(rows, name), marker="o", label=name)
        if names:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "none logged", ha="center", va="center", transform=ax.transAxes)

    write_file(png, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
