"""The MovieLens converter: both raw layouts, exact field values, clear errors, featurizable.

MovieLens may not be redistributed, so these tests write tiny files in its layouts
themselves; only the slow test reads the real ML-100K, when it is present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import invoke

from unirec.datasets import convert_movielens, detect_layout
from unirec.errors import DataError

ROOT = Path(__file__).resolve().parents[2]

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t11\t1\t878887116\n3\t12\t4\t880000000\n"
U_ITEM = (  # latin-1 on disk; item 12 is MovieLens' own "unknown" row (no date, no year)
    "10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "11|Café Society (1995)|01-Jan-1996||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
    "12|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|T8H1N\n"

RATINGS = "1::20::5::978300760\n1::21::3::978302109\n2::20::4::978301968\n"
MOVIES = ("20::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi\n"
          "21::Léon: The Professional (1994)::Crime|Drama\n"
          "22::Never Rated (2000)::Comedy\n")
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("latin-1"))
    return folder


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    return write_files(tmp_path / "ml-100k", {"u.data": U_DATA, "u.item": U_ITEM,
                                              "u.user": U_USER, "README": "not data"})


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    return write_files(tmp_path / "ml-1m", {"ratings.dat": RATINGS, "movies.dat": MOVIES,
                                            "users.dat": USERS})


def test_100k_layout_converts_every_field(ml100k: Path) -> None:
    assert detect_layout(ml100k) == "100k"
    doc = {k: v.to_dicts() for k, v in convert_movielens(ml100k).items()}
    assert [len(doc[k]) for k in ("user_data", "item_data", "interactions")] == [3, 3, 4]
    assert doc["user_data"][0] == {
        "user_id": 1, "continuous": {"age": 24.0},
        "categorical": {"gender": "M", "occupation": "technician", "zip_prefix": "8"}}
    assert doc["user_data"][2]["categorical"]["zip_prefix"] == "T"  # a Canadian postal code
    toy, cafe, unknown = doc["item_data"]
    assert toy == {"item_id": 10, "continuous": {"year": 1995.0}, "text": {"title": "Toy Story"},
                   "categorical": {"genres": ["Animation", "Children's", "Comedy"]}}
    assert cafe["text"]["title"] == "Café Society"  # latin-1 decoded
    assert cafe["continuous"]["year"] == 1996.0  # the release date wins over the title
    assert cafe["categorical"]["genres"] == ["Drama"]
    assert unknown["continuous"]["year"] is None and unknown["categorical"]["genres"] == ["unknown"]
    assert doc["interactions"][2] == {"user_id": 1, "item_id": 11, "rating": 1,
                                      "timestamp": 878887116}


def test_1m_layout_converts_every_field(ml1m: Path) -> None:
    assert detect_layout(ml1m) == "1m"
    doc = {k: v.to_dicts() for k, v in convert_movielens(ml1m).items()}
    assert [len(doc[k]) for k in ("user_data", "item_data", "interactions")] == [2, 3, 3]
    assert doc["user_data"] == [
        {"user_id": 1, "continuous": {"age": 1.0},
         "categorical": {"gender": "F", "occupation": "K-12 student", "zip_prefix": "4"}},
        {"user_id": 2, "continuous": {"age": 56.0},
         "categorical": {"gender": "M", "occupation": "self-employed", "zip_prefix": "7"}}]
    star_wars, leon, _ = doc["item_data"]
    assert star_wars == {"item_id": 20, "continuous": {"year": 1977.0},
                         "text": {"title": "Star Wars: Episode IV - A New Hope"},
                         "categorical": {"genres": ["Action", "Adventure", "Sci-Fi"]}}
    assert leon["text"]["title"] == "Léon: The Professional"
    assert doc["interactions"][1] == {"user_id": 1, "item_id": 21, "rating": 3,
                                      "timestamp": 978302109}


@pytest.mark.parametrize("layout", ["ml100k", "ml1m"])
def test_converted_document_featurizes_through_the_cli(tmp_path: Path, layout: str,
                                                       request) -> None:
    folder = request.getfixturevalue(layout)
    out = tmp_path / "movielens.json"
    conv = invoke("datasets", "movielens", folder, "--out", out)
    assert conv.exit_code == 0, conv.output
    assert conv.stdout.strip() == str(out)
    n_inter = len(json.loads(out.read_text())["interactions"])
    feat = invoke("featurize", out, "--store", tmp_path / "store", "--split", "none")
    assert feat.exit_code == 0, feat.output
    assert f"{n_inter} interactions" in feat.stdout
    rows = invoke("sql", "SELECT count(*) AS n FROM interactions WHERE rating IS NOT NULL",
                  "--store", tmp_path / "store", "--format", "json")
    assert json.loads(rows.stdout) == [{"n": n_inter}]


@pytest.mark.parametrize(("files", "message"), [
    ({"notes.txt": "hello"}, "holds neither MovieLens-100K (u.data, u.item, u.user) nor "
                             "MovieLens-1M (ratings.dat, movies.dat, users.dat) files"),
    ({"u.data": U_DATA, "u.item": U_ITEM}, "looks like MovieLens-100K but lacks u.user"),
    ({"u.data": U_DATA + "4\t10\t5\n", "u.item": U_ITEM, "u.user": U_USER},
     "u.data: line 5: expected 4 '\\t'-separated fields (user, item, rating, ts)"),
    ({"ratings.dat": RATINGS.replace("::3::", "::three::"), "movies.dat": MOVIES,
      "users.dat": USERS}, "ratings.dat: line 2: rating must be an integer, got 'three'"),
    ({"ratings.dat": RATINGS, "movies.dat": "", "users.dat": USERS},
     "movies.dat: the file is empty"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    folder = write_files(tmp_path / "data", files)
    result = invoke("datasets", "movielens", folder, "--out", tmp_path / "out.json")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (tmp_path / "out.json").exists()


def test_missing_folder_and_file_paths_are_errors(tmp_path: Path, ml100k: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        convert_movielens(tmp_path / "nope")
    with pytest.raises(DataError, match="is a file: pass the folder"):
        convert_movielens(ml100k / "u.data")


def _ml100k_folder() -> Path | None:
    env = os.environ.get("UNIREC_ML100K")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "ml-100k"
    return path if (path / "u.data").is_file() else None


@pytest.mark.slow
def test_real_ml100k_converts_whole(tmp_path: Path) -> None:
    folder = _ml100k_folder()
    if folder is None:
        pytest.skip("MovieLens-100K not found: set UNIREC_ML100K or put it in "
                    "../shared/data/ml-100k (it may not be redistributed, so it is not shipped)")
    frames = convert_movielens(folder)
    assert [frames[k].height for k in ("user_data", "item_data", "interactions")] == \
        [943, 1682, 100_000]
    items = frames["item_data"]
    assert items["categorical"].struct.field("genres").list.len().min() >= 1
    assert items["continuous"].struct.field("year").null_count() == 1  # the "unknown" item
    ratings = frames["interactions"]["rating"]
    assert (ratings.min(), ratings.max()) == (1, 5)
