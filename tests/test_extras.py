"""A verb that needs an optional extra which is not installed fails with one line naming it.

A missing extra is simulated by hiding its module (``sys.modules[name] = None``: ``import``
then raises ModuleNotFoundError and ``find_spec`` finds nothing), in process and cheaply.
tests/test_install.py checks the same in a real venv without torch.
"""

from __future__ import annotations

import sys

import click
import pytest
from conftest import invoke, one_error_line, write_doc

from unirec.cli.main import cli


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(("args", "hidden", "extra"), [
    (["fit"], "torch", "train"),
    (["serve"], "fastapi", "serve"),
    (["export", "--onnx", "onnx-out"], "onnxruntime", "onnx"),
    (["export", "--onnx", "onnx-out"], "torch", "train"),
    (["datasets", "synthetic", "--images", "--out", "data"], "PIL", "train"),
    (["tune"], "optuna", "tune"),
    (["tune"], "torch", "train"),
    (["featurize", "data", "--engine", "spark"], "pyspark", "spark"),
])
def test_verb_names_the_missing_extra(monkeypatch, tmp_path, args, hidden, extra) -> None:
    monkeypatch.chdir(tmp_path)
    _hide(monkeypatch, hidden)
    result = invoke(*args, "--store", "nowhere") if args[0] != "datasets" else invoke(*args)
    one_error_line(result, f"unirec[{extra}]")
    assert not (tmp_path / "data").exists() and not (tmp_path / "onnx-out").exists()


def test_new_user_records_need_train_known_users_do_not(monkeypatch, fitted_store) -> None:
    _hide(monkeypatch, "torch", "sentence_transformers")
    one_error_line(invoke("recommend", "--user-json", '{"history": []}', "--store", fitted_store),
                   "new user", "unirec[train]")
    from unirec.serve.recommender import Recommender

    user = Recommender.load(fitted_store).user_ids([1])[0]
    known = invoke("recommend", "--user", user, "-k", "3", "--store", fitted_store)
    assert known.exit_code == 0, known.stderr


def test_featurize_text_needs_train_and_plain_fields_do_not(monkeypatch, tmp_path, doc) -> None:
    _hide(monkeypatch, "torch", "sentence_transformers", "timm")
    line = one_error_line(invoke("featurize", write_doc(tmp_path / "doc.json", doc), "--store",
                                 tmp_path / "store"), "text fields", "unirec[train]")
    assert "sentence-transformers" in line
    assert not (tmp_path / "store").exists()
    for section in ("user_data", "item_data"):
        for record in doc[section]:
            record.pop("text", None)
            record.pop("image", None)
    ok = invoke("featurize", write_doc(tmp_path / "plain.json", doc), "--store",
                tmp_path / "store")
    assert ok.exit_code == 0, ok.stderr


def test_an_import_that_slips_past_the_checks_is_still_one_line(monkeypatch) -> None:
    _hide(monkeypatch, "usearch")

    @click.command("needs-ann")
    def needs_ann() -> None:
        import usearch  # noqa: F401

    monkeypatch.setitem(cli.commands, "needs-ann", needs_ann)
    one_error_line(invoke("needs-ann"), "`unirec needs-ann`", "usearch is not installed",
                   "unirec[ann]")
