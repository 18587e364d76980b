"""How the ``quality`` step reads: its markdown section and its chart (``bench.quality``).

Why separate: rendering runs again from a saved results file (``python -m bench.run --render
bench/results/<date>.json``) without measuring anything, so it must depend on the results dict
alone. The text says plainly where unirec misses the targets of the issue and by how much.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {"temporal": "temporal (each user's last 20 % is test; all items are candidates)",
          "cold_item": "cold_item (135 items never seen in training are the only candidates)",
          "mixed": "mixed (temporal, but the 135 cold items are unseen in training; every item "
                   "is a candidate; about 10 % of the test pairs are on new items)"}
METRIC_NAMES = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10", "hr@10": "HR@10"}
NEW_NAMES = {"new_parity": "new parity", "new_recall@10": "new Recall@10",
             "new_share_of_recs": "new share of recs"}


def _params(row: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.get("params", {}).items())
    if row["model"] == "unirec":
        text = "defaults" + (f" + {text}" if text else "")
    elif row["model"] == "unirec tuned":
        tune = row["tuning"]
        text = (f"`unirec tune` ({tune['budget']['trials']} trials or {tune['budget']['timeout_s']}"
                f" s; best trial {tune['best']['trial']}): {text}")
    return (text or "–") + (f"; mean of {row['seeds']} seeds" if row.get("seeds", 1) > 1
                            else "")


def _cell(row: dict[str, Any], key: str) -> str:
    value = f"{row[key]:.3f}"
    sd = row.get("sd", {}).get(key)
    return value + (f" ± {sd:.3f}" if sd is not None else "")


def table(rows: list[dict[str, Any]]) -> str:
    """One protocol's rows: metrics (warm and, on mixed, new-item side by side), train seconds,
    tuning cost."""
    new = [k for k in NEW_NAMES if any(k in r for r in rows)]
    head = "".join(f" {NEW_NAMES[k]} |" for k in new)
    lines = [f"| model | setting (tuned on the carve) | Recall@10 | NDCG@10 | HR@10 | coverage |"
             f"{head} train s | tuning: points, s |",
             "|---|---|" + "---:|" * (6 + len(new))]
    for row in rows:
        name = f"**{row['model']}**" if row["model"].startswith("unirec") else row["model"]
        if "error" in row:
            lines.append(f"| {name} | failed: `{row['error'][-200:]}` |" + " |" * (6 + len(new)))
            continue
        tune = row.get("tuning")
        tuned = f"{len(tune['trials'])}, {tune['seconds']:.1f}" if tune else "defaults"
        cells = "".join(f" {row[k]:.3f} |" if k in row else " – |" for k in new)
        lines.append(f"| {name} | {_params(row)} | {_cell(row, 'recall@10')} | "
                     f"{_cell(row, 'ndcg@10')} | {row['hr@10']:.3f} | {row['coverage']:.3f} |"
                     f"{cells} {row['fit_s']:.1f} | {tuned} |")
    return "\n".join(lines)


def verdict(protocol: str, rows: list[dict[str, Any]], targets: dict[str, Any]) -> str:
    """unirec against the issue's target and the best peer, in one sentence each."""
    metric = next(k for k in targets[protocol] if k in METRIC_NAMES)
    goal, name = targets[protocol][metric], METRIC_NAMES[metric]
    ref_peer, ref = targets[protocol]["best_peer"], targets[protocol][f"best_peer_{metric}"]
    unirec = next((r for r in rows if r["model"] == "unirec" and "error" not in r), None)
    others = [r for r in rows if not r["model"].startswith("unirec") and "error" not in r]
    best = max(others, key=lambda r: r[metric]) if others else None
    head = (f"Target: {name} ≥ {goal:g} (PROTOCOL.md's best peer: {ref_peer} {ref:g}). ")
    if unirec is None:
        ran = any(r["model"] == "unirec" for r in rows)
        return head + ("unirec did not finish, so it is not compared." if ran else
                       "unirec was not run here (peers only).")
    got = unirec[metric]
    if got >= goal:
        text = f"unirec {got:.3f}: **meets it** (+{got - goal:.3f})."
    else:
        text = (f"unirec {got:.3f}: **short by {goal - got:.3f}** ({(goal - got) / goal:.1%} "
                f"below the target).")
    if best is not None:
        diff = got - best[metric]
        text += (f" Against the best peer of this run, {best['model']} {best[metric]:.3f}: "
                 f"{diff:+.3f} ({diff / best[metric]:+.1%}).")
    tuned = next((r for r in rows if r["model"] == "unirec tuned" and "error" not in r), None)
    if tuned is not None:
        text += f" After `unirec tune`: {tuned[metric]:.3f} ({tuned[metric] - got:+.3f})."
    parity = targets[protocol].get("new_parity")
    if parity is not None and "new_parity" in unirec:
        peers = ", ".join(f"{r['model']} {r['new_parity']:.3f}" for r in others
                          if "new_parity" in r)
        text += (f" New items: parity {unirec['new_parity']:.3f} against the target "
                 f"≥ {parity:g} ({'met' if unirec['new_parity'] >= parity else 'missed'}; "
                 f"peers: {peers or 'none'}), {unirec['new_share_of_recs']:.2%} of the slots.")
    return head + text


def markdown(result: dict[str, Any], chart: str) -> str:
    """The whole section body (the run's provenance line is added by ``bench.run``)."""
    if "skipped" in result:
        return f"**quality** skipped: {result['skipped']}."
    seeds = result.get("seeds", 1)
    parts = [
        "**quality on MovieLens-100K**, the shared protocol (PROTOCOL.md; splits by "
        "`../shared/protocol/ml100k_split.py`, every list scored by its `evaluate.py`). "
        "unirec runs with its **defaults**, as a user runs it: `unirec featurize train.json "
        "--split none` then `unirec fit` (child processes, one thread; the top-10 "
        "`unirec recommend` serves, its ranking stage included where fit kept it). Each "
        "peer (`bench/peers.py`) tries its grid on a tuning carve cut "
        "from the training part the way test is cut from everything "
        "(`bench.quality_ml100k`), keeps the best by NDCG@10 (temporal) or Recall@10 "
        "(cold_item, mixed: NDCG@10), refits on the whole training part and is scored once "
        "on test"
        + (f"; stochastic peers are the mean of {seeds} seeds (± sd)" if seeds > 1 else "")
        + ". `train s`: a peer's final fit in process, one thread; unirec's featurize + fit "
        "as whole processes (interpreter start, torch import and title embedding included). "
        "`tuning`: grid points tried and their seconds. On mixed, `evaluate.py --new-items` "
        "adds the new items' metrics beside the warm ones: `new parity` (their share of hits "
        "over their share of test; 1 = found as well as warm items), `new Recall@10`, `new "
        "share of recs`. **unirec tuned**: `unirec tune` (trials or seconds as stated, on the "
        "store's validation slice carved from train) then `unirec fit --config` its file.",
    ]
    for protocol, entry in result["protocols"].items():
        parts.append(f"*{LABELS.get(protocol, protocol)}*\n\n{table(entry['rows'])}\n\n"
                     + verdict(protocol, entry["rows"], result["targets"]))
    for peer, why in result.get("unavailable", {}).items():
        parts.append(f"Not run: {peer}: {why}.")
    parts.append(f"![unirec against the peers: NDCG@10 and Recall@10 per protocol, with the "
                 f"targets]({chart})")
    return "\n\n".join(parts)


def draw(result: dict[str, Any], path: Path) -> None:
    """Recall@10 and NDCG@10 bars per model, one panel per protocol, targets as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(result["protocols"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(6.2 * len(protocols), 4.2),
                             squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = [r for r in result["protocols"][protocol]["rows"] if "error" not in r]
        xs = range(len(rows))
        for key, color, off in (("recall@10", "#4C72B0", -0.2), ("ndcg@10", "#DD8452", 0.2)):
            bars = ax.bar([x + off for x in xs], [r[key] for r in rows], 0.4, color=color,
                          label=METRIC_NAMES[key])
            for bar, row in zip(bars, rows, strict=True):
                if row["model"].startswith("unirec"):
                    bar.set_edgecolor("black")
                    bar.set_linewidth(1.5)
                ax.annotate(f"{bar.get_height():.3f}", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=7)
        target = result["targets"][protocol]
        metric = next(k for k in target if k in METRIC_NAMES)
        ax.axhline(target[metric], color="crimson", ls="--", lw=1.2,
                   label=f"target {METRIC_NAMES[metric]} ≥ {target[metric]:g}")
        ax.axhline(target[f"best_peer_{metric}"], color="grey", ls=":", lw=1.2,
                   label=f"{target['best_peer']} (PROTOCOL.md) {target[f'best_peer_{metric}']:g}")
        ax.set_xticks(list(xs), [r["model"] for r in rows])
        for tick, row in zip(ax.get_xticklabels(), rows, strict=True):
            tick.set_fontweight("bold" if row["model"].startswith("unirec") else "normal")
        ax.set_title(protocol)
        # headroom above the targets for the legend, so it hides no line or bar
        ax.set_ylim(0, max([0.62, *(r[k] for r in rows for k in ("recall@10", "ndcg@10"))])
                    * 1.12)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("MovieLens-100K, top-10: unirec (outlined, defaults) against tuned peers",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
