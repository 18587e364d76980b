"""Nothing a user owns is deleted: featurize replaces only a unirec store, one writer at a
time, and a symlinked --store stays a link to the new store."""

from __future__ import annotations

import fcntl
import os

import pytest
from conftest import invoke, one_error_line, run_unirec, tree_digest, write_doc

from unirec import Store, StoreError, featurize
from unirec.store.guard import MARKER, lock_path


def test_a_folder_of_user_files_survives(tmp_path, doc) -> None:
    data = write_doc(tmp_path / "d.json", doc)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    (mine / "sub" / "photo.png").write_bytes(b"\x89PNG")
    before = tree_digest(mine)
    one_error_line(invoke("featurize", data, "--store", mine), "not a unirec store")
    assert tree_digest(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "mine"]


def test_a_file_the_current_folder_and_the_inputs_folder_survive(tmp_path, doc,
                                                                 monkeypatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    data = write_doc(folder / "data.json", doc)
    (folder / "img").mkdir()
    (folder / "img" / "u1.png").write_bytes(b"png")
    before = tree_digest(tmp_path)
    one_error_line(invoke("featurize", data, "--store", folder), "holds the input")
    with pytest.raises(StoreError, match="is a file"):
        featurize(data, data)  # (the CLI's --store refuses a file before featurize runs)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # even an empty current folder is not replaced
    one_error_line(invoke("featurize", data, "--store", "."), "current folder")
    monkeypatch.chdir(tmp_path)
    # a store that holds its own input is refused too, even though it is a store
    assert invoke("featurize", data, "--store", tmp_path / "s").exit_code == 0
    inside = tmp_path / "s" / "data.json"
    inside.write_text(data.read_text())
    one_error_line(invoke("featurize", inside, "--store", tmp_path / "s"), "holds the input")
    assert inside.is_file()
    assert tree_digest(folder) == {k[len("data/"):]: v for k, v in before.items()
                                   if k.startswith("data/")}


def test_stores_and_empty_folders_are_replaced(tmp_path, doc) -> None:
    data = write_doc(tmp_path / "d.json", doc)
    (tmp_path / "empty").mkdir()
    assert invoke("featurize", data, "--store", tmp_path / "empty").exit_code == 0
    assert (tmp_path / "empty" / MARKER).is_file()
    doc["interactions"] = doc["interactions"][:2]
    write_doc(data, doc)
    assert invoke("featurize", data, "--store", tmp_path / "empty").exit_code == 0
    assert Store(tmp_path / "empty").counts()["interactions"] == 2
    # a store written before the marker existed is still recognised
    (tmp_path / "empty" / MARKER).unlink()
    assert invoke("featurize", data, "--store", tmp_path / "empty").exit_code == 0


def test_symlinked_store_is_followed_without_stray_links(tmp_path, doc) -> None:
    data = write_doc(tmp_path / "d.json", doc)
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)  # dangling until the first featurize
    for _ in range(2):
        result = invoke("featurize", data, "--store", link)
        assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / MARKER).is_file() and Store(link).counts()["users"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "link", "real"]


def test_a_second_writer_is_refused_and_told_who_holds_the_store(tmp_path, doc) -> None:
    data = write_doc(tmp_path / "d.json", doc)
    store = tmp_path / "store"
    assert invoke("featurize", data, "--store", store).exit_code == 0
    before = tree_digest(store)
    path = lock_path(store)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242 featurize\n")
        proc = run_unirec("featurize", data, "--store", store)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"Error: store {str(store)!r} is being written by unirec featurize (pid 4242): "
            "wait for it to finish (one writer at a time)"]
        fit = run_unirec("fit", "--store", store, "--epochs", "1")
        assert fit.returncode == 1 and "pid 4242" in fit.stderr, fit.stderr
    finally:
        os.close(fd)
    assert tree_digest(store) == before
    assert invoke("featurize", data, "--store", store).exit_code == 0
    assert not path.exists()


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1) TO '{store}/manifest.json'",
    "COPY users TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/export'",
    "SELECT * FROM read_text('{tmp}/secret.txt')",
    "SELECT * FROM read_blob('{tmp}/secret.txt')",
    "SELECT * FROM read_csv('{tmp}/secret.txt')",
    "SELECT * FROM glob('{tmp}/*')",
    "SELECT * FROM read_json_auto('{tmp}/secret.json')",
    "SELECT * FROM read_parquet('{store}/cache/*.parquet')",
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD httpfs",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
])
def test_sql_statement_classes_are_refused(sql_store, query) -> None:
    store, tmp = sql_store
    before = tree_digest(tmp)
    result = invoke("sql", query.format(store=store, tmp=tmp), "--store", store)
    one_error_line(result)
    assert "refused" in result.stderr or "read-only" in result.stderr, result.stderr
    assert "precious" not in result.stdout
    assert tree_digest(tmp) == before


def test_every_store_table_is_still_readable(sql_store) -> None:
    store, _ = sql_store
    st = Store(store)
    counts = st.counts()
    assert counts["users"] == 3 and len(counts) >= 10
    for table in counts:
        assert st.sql(f'SELECT * FROM "{table}" LIMIT 1').width > 0


@pytest.fixture(scope="module")
def sql_store(tmp_path_factory):
    import copy

    from conftest import BASE_DOC

    tmp = tmp_path_factory.mktemp("sandbox")
    (tmp / "secret.txt").write_text("precious\n")
    (tmp / "secret.json").write_text('{"precious": 1}')
    result = invoke("featurize", write_doc(tmp / "d.json", copy.deepcopy(BASE_DOC)),
                    "--store", tmp / "store")
    assert result.exit_code == 0, result.output
    return tmp / "store", tmp
