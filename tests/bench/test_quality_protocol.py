"""The quality step's wiring: shared splits -> peers -> shared evaluate.py, and its rendering.

The MovieLens part skips when the data is absent (it may not be redistributed, so a fresh
checkout may lack it); it fits nothing heavier than MostPop. The rendering part needs nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bench import quality, quality_report
from bench import quality_ml100k as qm

DATA = qm.find_data()
needs_data = pytest.mark.skipif(
    DATA is None, reason="MovieLens-100K not found: set UNIREC_ML100K or put it in "
    "../shared/data/ml-100k (the quality bench skips the same way)")


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ml100k")
    qm.write_splits(DATA, work / "splits")
    qm.write_tuning_splits(DATA, work / "splits", work / "tuning")
    return work


@needs_data
def test_splits_catalogue_and_the_shared_evaluator_agree(splits: Path) -> None:
    cat, ev = quality.Catalogue(DATA), quality._evaluator()
    assert (len(cat.user_ids), len(cat.item_ids)) == (943, 1682)
    x = cat.train_matrix(splits / "splits" / "temporal")
    assert x.nnz == 80_367  # PROTOCOL.md's temporal train rows
    assert cat.candidates(splits / "splits" / "cold_item").sum() == 135
    assert cat.candidates(splits / "splits" / "temporal") is None
    row = quality.test_peer("MostPop", {}, splits / "splits" / "temporal", cat, splits, 1)
    # PROTOCOL.md's reference figures for MostPop, through the shared evaluate.py
    assert row["recall@10"] == pytest.approx(0.111, abs=0.001)
    assert row["ndcg@10"] == pytest.approx(0.111, abs=0.001)
    assert row["train_violations"] == 0
    # tuning scores in process with the same evaluate.py; the carve never holds test rows
    tuning = quality.tune_peer("MostPop", [{}], splits / "tuning" / "temporal", cat, ev)
    assert tuning["best"] == {} and 0 < tuning["trials"][0]["ndcg@10"] < 1
    test_pairs = qm._pairs(splits / "splits" / "temporal" / "test.csv")
    for part in ("train.csv", "test.csv"):
        assert not qm._pairs(splits / "tuning" / "temporal" / part) & test_pairs


@needs_data
def test_mixed_protocol_and_its_carve_score_new_items_and_never_read_test(splits: Path) -> None:
    cat = quality.Catalogue(DATA)
    mixed = splits / "splits" / "mixed"
    assert cat.train_matrix(mixed).nnz == 72_872  # PROTOCOL.md's mixed train rows
    assert cat.candidates(mixed) is None  # every item competes
    new = cat.new_items(mixed)
    assert len(new & set(qm._ids(splits / "splits" / "cold_item" / "cold_items.csv"))) == 135
    row = quality.test_peer("MostPop", {}, mixed, cat, splits, 1)
    assert row["new_parity"] == 0.0 and row["new_share_of_recs"] == 0.0  # cannot see them
    test_pairs = qm._pairs(mixed / "test.csv")
    carve = splits / "tuning" / "mixed"
    for part in ("train.csv", "test.csv"):
        assert not qm._pairs(carve / part) & test_pairs
    carve_new = set(qm._ids(carve / "new_items.csv").tolist())
    assert new < carve_new  # the protocol's new items stay new; the carve adds its own
    assert not {i for _, i in qm._pairs(carve / "train.csv")} & carve_new
    assert {i for _, i in qm._pairs(carve / "test.csv")} & carve_new  # something to find
    tuning = quality.tune_peer("EASE", [{"lam": 200.0}], carve, cat, quality._evaluator())
    assert tuning["trials"][0]["new_parity"] == 0.0 and tuning["trials"][0]["ndcg@10"] > 0.05


def fake_result(unirec_ndcg: float = 0.234) -> dict:
    def row(model: str, ndcg: float, recall: float, **extra: object) -> dict:
        return {"model": model, "params": {}, "recall@10": recall, "ndcg@10": ndcg,
                "hr@10": 0.7, "coverage": 0.3, "fit_s": 1.0, "seeds": 1, **extra}

    tuning = {"metric": "ndcg@10", "best": {}, "trials": [{}], "seconds": 0.1}
    return {"benchmark": "quality", "k": 10, "targets": qm.TARGETS, "seeds": 3,
            "unavailable": {"LightFM": "lightfm is not installed"},
            "protocols": {
                "temporal": {"rows": [row("EASE", 0.192, 0.19, tuning=tuning),
                                      row("unirec", unirec_ndcg, 0.23)]},
                "cold_item": {"rows": [row("GenrePop", 0.2, 0.30, tuning=tuning),
                                       {"model": "unirec", "error": "fit failed: boom"}]},
                "mixed": {"rows": [
                    row("EASE", 0.182, 0.18, tuning=tuning, **new(0.0, 0.0, 0.0)),
                    row("LightFM", 0.15, 0.16, tuning=tuning, **new(0.9, 0.2, 0.12)),
                    row("unirec", 0.238, 0.24, **new(0.005, 0.001, 0.0005)),
                    row("unirec tuned", 0.245, 0.25, **new(0.2, 0.05, 0.03), tuning={
                        "budget": {"trials": 6, "timeout_s": 900}, "trials": [{}, {}],
                        "seconds": 600.0, "best": {"trial": 1}})]}}}


def new(parity: float, recall: float, share: float) -> dict:
    return {"new_parity": parity, "new_recall@10": recall, "new_share_of_recs": share}


def test_markdown_says_by_how_much_unirec_misses_the_target() -> None:
    text = quality.markdown(fake_result())
    assert "short by 0.016" in text and "EASE 0.192: +0.042" in text
    assert "unirec did not finish" in text and "failed: `fit failed: boom`" in text
    assert "Not run: LightFM" in text and quality.CHART in text
    assert "meets it" in quality.markdown(fake_result(unirec_ndcg=0.26))
    assert "skipped" in quality.markdown({"benchmark": "quality", "skipped": "no data"})


def test_mixed_table_puts_new_item_metrics_beside_the_warm_ones() -> None:
    text = quality.markdown(fake_result())
    mixed = text[text.index("*mixed"):]
    header = next(line for line in mixed.splitlines() if line.startswith("| model"))
    assert header.index("NDCG@10") < header.index("new parity") < header.index("train s")
    assert "| **unirec tuned** | `unirec tune` (6 trials or 900 s; best trial 1)" in mixed
    assert "| 0.005 | 0.001 | 0.001 |" in mixed  # unirec's new-item cells
    assert "parity 0.005 against the target ≥ 0.5 (missed; peers: EASE 0.000, LightFM " \
           "0.900)" in mixed
    assert "After `unirec tune`: 0.245 (+0.007)" in mixed
    temporal = text[text.index("*temporal"):text.index("*cold_item")]
    assert "new parity" not in temporal  # only where evaluate.py reported them


def test_render_rewrites_the_section_and_draws_the_chart(tmp_path: Path) -> None:
    from bench import run

    env = {"cpus": 2, "cpu": "x", "memory_gb": 1, "python": "3", "platform": "p",
           "commit": "abc"}
    result = {**fake_result(), "quick": False, "date": "2026-01-01", "commit": "abc",
              "seconds": 1.0, "load_avg_before": [0, 0, 0], "load_avg_after": [0, 0, 0]}
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nhand-written notes stay\n")
    run.write_docs(docs, env, {"quality": copy.deepcopy(result)})
    text = docs.read_text()
    assert "<!-- bench:quality -->" in text and "hand-written notes stay" in text
    png = tmp_path / quality.CHART
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    quality_report.draw({**result, "protocols": {"temporal": result["protocols"]["temporal"]}},
                        png)  # one protocol draws too


def test_epoch_summary_reads_retrieval_epochs_past_the_ranking_stage_rows() -> None:
    """A default fit's metrics.jsonl ends with the ranking stage's rows (no training loss,
    no epoch): the quality bench summarises retrieval's epochs only (it failed with
    KeyError 'train_loss' once the ranker ran by default)."""
    history = [
        {"epoch": 1, "train_loss": 9.0, "train_seconds": 2.0, "val_ndcg@10": 0.15,
         "val_recall@10": 0.2},
        {"epoch": 2, "train_loss": 8.0, "train_seconds": 4.0, "val_ndcg@10": 0.18,
         "val_recall@10": 0.22},
        {"stage": "rank", "rank_epoch": 1, "rank_loss": 2.9, "val_rank_ndcg@10": 0.3},
        {"stage": "rank_refit", "rank_epoch": 1, "rank_loss": 2.6},
    ]
    assert qm.epoch_summary(history) == {
        "epochs": 2, "best_epoch": 2, "fit_val": {"ndcg@10": 0.18, "recall@10": 0.22},
        "seconds_per_epoch": 3.0}
    no_validation = [{k: v for k, v in r.items() if not k.startswith("val_")}
                     for r in history]
    assert qm.epoch_summary(no_validation)["best_epoch"] == 2  # the lowest loss
