"""The command line as a user meets it: help, version, a real process end to end."""

from __future__ import annotations

import json

from conftest import invoke, run_unirec

from unirec import __version__


def test_help_lists_the_verbs() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in ("featurize", "sql", "tables", "schema", "datasets"):
        assert verb in result.stdout
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
    assert json.loads(out.stdout) == [{"u": json.loads(out.stdout)[0]["u"], "n": 600}]
    assert 0 < json.loads(out.stdout)[0]["u"] <= 50


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
