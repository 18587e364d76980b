"""New-item experiments on MovieLens-100K (docs/quality.md): one fit, its protocol metrics and
where new items' scores fall among warm ones; the mixed tuning carve; what the title keeps.

Why: the mixed protocol's new_parity says *whether* new items are recommended; these numbers
say *why not* (score gap, rank percentile among the same user's warm items) and which change
moves them. Every run copies one featurized store per protocol (the MiniLM titles are cached
there) and varies only ``fit`` settings, so a run costs one fit.

Usage (splits from ``../shared/protocol/ml100k_split.py --out SPLITS``; stores from
``unirec featurize SPLITS/P/train.json --split none --store STORES/P``; nothing derived from
the data is written inside the repository):

  python -m bench.new_items run SPLITS/mixed STORES/mixed TAG [--set train.x=y ...]
  python -m bench.new_items carve SPLITS OUT        # OUT/mixed: a carve of mixed's train only
  python -m bench.new_items title STORE [STORE ...]  # title information before/after projection
  python -m bench.new_items scale STORE SPLIT 0.92,0.95  # new-item map scales on a kept fit

``run`` appends one JSON line to ``$UNIREC_EXP_RESULTS`` (default ``/tmp/new_items.jsonl``);
with ``UNIREC_EXP_KEEP=1`` it keeps the fitted store (``/tmp/unirec-new-items/TAG``) for
``scale``, which refits only the new-item map (training is unchanged by it) and scores again.
``$UNIREC_EXP_LAUNCH`` runs the fit under a launcher instead of this interpreter, e.g.
``"torchrun --standalone --nproc-per-node 2"`` (data-parallel ranks, one thread each).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.quality_ml100k import PROTOCOL_DIR, find_data, recommend
from unirec.store import Store

RESULTS = Path(os.environ.get("UNIREC_EXP_RESULTS", "/tmp/new_items.jsonl"))
TUNE_SEED = 7  # the carve's cold items; the protocol's own use 42


def _ids(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array(sorted(int(r["item_id"]) for r in csv.DictReader(f)), np.int64)


def new_item_ranks(store: Path, split: Path) -> dict[str, float]:
    """Where new items' scores fall among each user's warm, unseen items (percentile 0-1)."""
    with Store(store).connect() as con:
        umap = con.execute("SELECT user_index FROM user_map ORDER BY user_id").fetchnumpy()
        imap = con.execute("SELECT item_id, item_index FROM item_map ORDER BY item_id"
                           ).fetchnumpy()
        seen = con.execute("SELECT DISTINCT user_index, item_index FROM samples").fetchnumpy()
    users = np.load(store / "model" / "user_embeddings.npy")
    items = np.load(store / "model" / "item_embeddings.npy")
    scores = users[umap["user_index"]] @ items[imap["item_index"]].T
    col = np.empty(len(items), np.int64)
    col[imap["item_index"]] = np.arange(len(imap["item_index"]))
    row = np.empty(len(users), np.int64)
    row[umap["user_index"]] = np.arange(len(umap["user_index"]))
    scores[row[seen["user_index"]], col[seen["item_index"]]] = np.nan
    new = np.isin(imap["item_id"], _ids(split / "new_items.csv"))
    warm = np.sort(np.where(np.isnan(scores[:, ~new]), -np.inf, scores[:, ~new]), axis=1)
    n_warm = (~np.isnan(scores[:, ~new])).sum(1)
    pct = np.concatenate([(np.searchsorted(warm[r], scores[r, new]) - (warm.shape[1] - n))
                          / n for r, n in enumerate(n_warm)])
    return {"score_new": float(np.nanmean(scores[:, new])),
            "score_warm": float(np.nanmean(scores[:, ~new])),
            **{f"new_pct_q{q}": float(np.quantile(pct, q / 100)) for q in (10, 25, 75, 90)},
            "new_pct_median": float(np.median(pct)),
            "new_above_warm_p90": float((pct > 0.9).mean())}


def run(split: Path, base: Path, tag: str, sets: list[str]) -> dict:
    """Copy ``base``, fit with ``sets``, score with the protocol's evaluate.py."""
    store = Path("/tmp/unirec-new-items") / tag
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(base, store, ignore=shutil.ignore_patterns("model"))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.time()
    launch = shlex.split(os.environ.get("UNIREC_EXP_LAUNCH", "")) or [sys.executable]
    subprocess.run([*launch, "-m", "unirec", "fit", "--store", str(store), *sets],
                   env=env, check=True, capture_output=True)
    fit_s = time.time() - t0
    recs = store / "recs.csv"
    cmd = [sys.executable, str(PROTOCOL_DIR / "evaluate.py"), "--test", str(split / "test.csv"),
           "--train", str(split / "train.csv"), "--recs", str(recs), "--k", "10"]
    diag: dict = {}
    if (split / "cold_items.csv").is_file():
        cmd += ["--candidates", str(split / "cold_items.csv")]
    if (split / "new_items.csv").is_file():
        cmd += ["--new-items", str(split / "new_items.csv")]
        diag = new_item_ranks(store, split)
    recommend(store, split, recs, stage=None)  # retrieval alone, from the embedding files
    alone = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    diag.update({f"retrieve_{k}": alone[k] for k in ("ndcg@10", "recall@10", "new_parity")
                 if k in alone})
    recommend(store, split, recs)  # as served: the ranking stage where fit kept it
    metrics = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    if (split / "new_items.csv").is_file():  # the new items alone, as cold_item ranks them
        metrics.update(cold_only(store, split))
    history = [json.loads(x) for x in (store / "model" / "metrics.jsonl").read_text().splitlines()]
    out = {"tag": tag, "split": str(split), "sets": sets, "fit_s": round(fit_s),
           **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, **diag,
           "history": [{k: v for k, v in h.items() if k.startswith("val_") or k == "epoch"}
                       for h in history]}
    with open(RESULTS, "a") as f:
        f.write(json.dumps(out) + "\n")
    if not os.environ.get("UNIREC_EXP_KEEP"):  # kept: post-hoc variants of one fit
        shutil.rmtree(store, ignore_errors=True)
    return out


def cold_only(store: Path, split: Path) -> dict[str, float]:
    """Recall/NDCG@10 ranking only the new items for the users who met them (the cold_item
    protocol inside a mixed split: on the carve, a cold-item figure read from train only)."""
    new = store / "new_test.csv"
    with open(split / "test.csv", newline="") as f, open(new, "w", newline="") as g:
        rows = csv.DictReader(f)
        w = csv.DictWriter(g, fieldnames=rows.fieldnames or [])
        w.writeheader()
        keep = set(_ids(split / "new_items.csv").tolist())
        w.writerows(r for r in rows if int(r["item_id"]) in keep)
    recs = store / "recs_new.csv"
    recommend(store, split, recs, candidates=split / "new_items.csv", stage=None)
    cmd = [sys.executable, str(PROTOCOL_DIR / "evaluate.py"), "--test", str(new),
           "--train", str(split / "train.csv"), "--recs", str(recs), "--k", "10",
           "--candidates", str(split / "new_items.csv")]
    m = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {"cold_recall@10": m["recall@10"], "cold_ndcg@10": m["ndcg@10"]}


def carve(splits: Path, out: Path) -> None:
    """The mixed protocol applied again to mixed's train part (test never read)."""
    spec = importlib.util.spec_from_file_location("split", PROTOCOL_DIR / "ml100k_split.py")
    assert spec and spec.loader
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    data = find_data()
    if data is None:
        sys.exit("no MovieLens-100K: set UNIREC_ML100K")
    users, items = m.load_users(str(data)), m.load_items(str(data))
    rows = [r for r in m.load_ratings(str(data)) if r[0] in users]
    with open(splits / "mixed" / "train.csv", newline="") as f:
        pairs = {(int(r["user_id"]), int(r["item_id"])) for r in csv.DictReader(f)}
    train = [r for r in rows if (r[0], r[1]) in pairs]
    tr_t, te_t = m.temporal_split(train)
    cold = m.cold_item_split(train, seed=TUNE_SEED)[2]
    tr, te, new = m.mixed_split(tr_t, te_t, cold, items)
    d = out / "mixed"
    d.mkdir(parents=True, exist_ok=True)
    m.write_csv(str(d / "train.csv"), tr)
    m.write_csv(str(d / "test.csv"), te)
    (d / "new_items.csv").write_text("item_id\n" + "".join(f"{i}\n" for i in new))
    all_users = set(users) | {r[0] for r in rows}
    (d / "train.json").write_text(json.dumps(m.library_document(tr, users, items, all_users)))


def title_info(store: Path) -> dict[str, float]:
    """Genre macro-F1 (5-fold logistic regression) from the raw 384-d title vector, the
    model's projection, a random projection and the principal components (``pca_frozen``)
    of the same width, and the content-only item vector; and the share of each item's 10
    nearest raw-title neighbours kept after each projection.
    """
    import torch
    from safetensors.numpy import load_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from unirec.model.encoders import init_projection
    from unirec.model.restore import load_model

    t = load_file(str(store / "tensors" / "items.safetensors"))
    raw = load_file(str(store / "tensors" / "text_embeddings.safetensors"))["embedding"][
        t["text.title"].astype(np.int64)[1:]]
    model = load_model(store)
    enc = next(e for e in model.item.encoders if e.name == "text.title")
    with torch.no_grad():
        proj = enc.proj(torch.from_numpy(raw)).numpy()
        idx = torch.arange(1, len(t["_index"]))
        content = model.item.encode(model.item.gather(idx), None).numpy()
    genres = t["categorical.genres"][1:]
    y = np.zeros((len(genres), int(genres.max()) + 1), int)
    for j in range(genres.shape[1]):
        y[np.arange(len(genres)), genres[:, j]] = 1
    y = y[:, 1:][:, y[:, 1:].sum(0) >= 10]
    rand = raw @ np.random.default_rng(0).normal(size=(raw.shape[1], proj.shape[1]))
    pca_layer = torch.nn.Linear(raw.shape[1], proj.shape[1])  # content_projection=pca_frozen
    init_projection(pca_layer, model.shared.text, "pca_frozen")
    with torch.no_grad():
        pca = pca_layer(torch.from_numpy(raw)).numpy()

    def f1(x: np.ndarray) -> float:
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(
            LogisticRegression(max_iter=500, C=0.1)))
        return round(float(cross_val_score(clf, x, y, cv=5, scoring="f1_macro").mean()), 3)

    def nn(x: np.ndarray, k: int = 10) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1)[:, :k]

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b,
                                                                             strict=True)])), 3)

    near = nn(raw)
    return {"genre_f1_raw": f1(raw), "genre_f1_projection": f1(proj),
            "genre_f1_random_projection": f1(rand), "genre_f1_pca_projection": f1(pca),
            "genre_f1_content_vector": f1(content),
            "nn10_kept_projection": overlap(near, nn(proj)),
            "nn10_kept_random_projection": overlap(near, nn(rand)),
            "nn10_kept_pca_projection": overlap(near, nn(pca))}


def scales(store: Path, split: Path, values: list[float]) -> None:
    """Mixed-protocol metrics of one kept fit with the new-item map at each scale (and off):
    ``fit_new_item_map`` on the restored model, item vectors rewritten, scored as ``run``:
    retrieval alone and as served (the ranking stage, where fit kept it, re-orders warm
    candidates; new items keep the slots the scale gives them)."""
    import torch

    from unirec.model.newitems import fit_new_item_map
    from unirec.model.outputs import embed_all
    from unirec.model.restore import load_model

    model = load_model(store)
    path = store / "model" / "item_embeddings.npy"
    saved = np.load(path)
    try:
        for scale in [None, *values]:
            if scale is None:
                model.item.set_new_item_map(None, 1.0)
            else:
                fit_new_item_map(model, scale)
            np.save(path, embed_all(model, len(saved), "item", torch.device("cpu")))
            cold = cold_only(store, split)
            for stage in (None, "auto"):
                recs = store / "recs.csv"
                recommend(store, split, recs, stage=stage)
                m = json.loads(subprocess.run(
                    [sys.executable, str(PROTOCOL_DIR / "evaluate.py"), "--test",
                     str(split / "test.csv"), "--train", str(split / "train.csv"), "--recs",
                     str(recs), "--k", "10", "--new-items", str(split / "new_items.csv")],
                    capture_output=True, text=True, check=True).stdout)
                m.update(cold)
                print(json.dumps({"scale": scale, "stage": stage or "retrieve",
                                  **{k: round(m[k], 4) for k in (
                                      "ndcg@10", "recall@10", "new_parity",
                                      "new_share_of_recs", "cold_recall@10")}}), flush=True)
    finally:
        np.save(path, saved)


def main(argv: list[str]) -> None:
    if argv[:1] == ["run"]:
        res = run(Path(argv[1]), Path(argv[2]), argv[3], argv[4:])
        print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    elif argv[:1] == ["carve"]:
        carve(Path(argv[1]), Path(argv[2]))
    elif argv[:1] == ["scale"]:
        scales(Path(argv[1]), Path(argv[2]), [float(x) for x in argv[3].split(",")])
    elif argv[:1] == ["title"]:
        for store in argv[1:]:
            print(store, json.dumps(title_info(Path(store))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
