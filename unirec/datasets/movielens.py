"""Convert raw MovieLens-100K or -1M files into unirec's input document.

Why: MovieLens is the dataset people try a recommender on first, and its licence forbids
redistributing it, so unirec ships a converter instead of the data. Each file is read whole
by Polars and split with string expressions (no per-line Python), so ML-1M's million
ratings convert in about a second.

What becomes what:

- items: ``genres`` (multi-valued categorical), ``title`` (text, without the trailing
  "(1995)"), ``year`` (continuous; 100K: from the release date, else the title).
- users: ``gender``, ``occupation`` (1M's codes become their names), ``zip_prefix``
  (categorical: the zip code's first character, the US postal region, 19 values in ML-100K;
  three characters give 382 values for its 943 users, 72% of them held by one or two, too
  few to learn an embedding from), ``age``
  (continuous; in 1M it is the lower bound of the age bracket the file codes).
- interactions: ``user_id``, ``item_id``, ``timestamp`` (unix seconds) and ``rating`` (1-5),
  the input format's own field for explicit feedback.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import polars as pl

from unirec.errors import DataError

# Files that identify each layout, in the order the error message names them.
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "100k": ("u.data", "u.item", "u.user"),
    "1m": ("ratings.dat", "movies.dat", "users.dat"),
}
# u.item's 19 genre flags, in file order (the dataset's README and u.genre agree).
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
# users.dat occupation codes 0-20, from the ML-1M README.
OCCUPATIONS_1M = ("other", "academic/educator", "artist", "clerical/admin",
                  "college/grad student", "customer service", "doctor/health care",
                  "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
                  "programmer", "retired", "sales/marketing", "scientist", "self-employed",
                  "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


def detect_layout(path: Path) -> str:
    """``"100k"`` or ``"1m"``: which MovieLens files the folder ``path`` holds.

    Raises ``DataError`` naming the expected files when it holds neither layout whole.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"MovieLens folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"{str(path)!r} is a file: pass the folder that holds the MovieLens "
                        "files (u.data, u.item, u.user or ratings.dat, movies.dat, users.dat)")
    found = {name: [f for f in files if (path / f).is_file()] for name, files in LAYOUTS.items()}
    for name, files in LAYOUTS.items():
        if len(found[name]) == len(files):
            return name
    for name, files in LAYOUTS.items():
        if found[name]:
            missing = ", ".join(f for f in files if f not in found[name])
            raise DataError(f"{str(path)!r} looks like MovieLens-{name.upper()} but lacks "
                            f"{missing}")
    raise DataError(f"{str(path)!r} holds neither MovieLens-100K (u.data, u.item, u.user) nor "
                    "MovieLens-1M (ratings.dat, movies.dat, users.dat) files")


def convert_movielens(path: Path) -> dict[str, pl.DataFrame]:
    """The input document's sections, as Polars frames, from a MovieLens-100K or -1M folder.

    The frames carry the document's nesting as struct columns, ready for
    ``unirec.datasets.write_document`` or ``write_folder``. Raises ``DataError`` when the
    folder holds neither layout or a file does not parse, naming the file and line.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "100k":
        users = _parse(path / "u.user", "|", ["user", "age", "gender", "occupation", "zip"],
                       _users)
        items = _parse(path / "u.item", "|", _ITEM_100K_COLUMNS, _items_100k)
        ratings = _parse(path / "u.data", "\t", ["user", "item", "rating", "ts"], _ratings)
    else:
        users = _parse(path / "users.dat", "::", ["user", "gender", "age", "occupation", "zip"],
                       lambda df: _users(df.with_columns(_occupation_name(df))))
        items = _parse(path / "movies.dat", "::", ["item", "title", "genres"], _items_1m)
        ratings = _parse(path / "ratings.dat", "::", ["user", "item", "rating", "ts"],
                         _ratings)
    return {"user_data": users, "item_data": items, "interactions": ratings}


_ITEM_100K_COLUMNS = ["item", "title", "released", "video", "url",
                      *(f"g{k}" for k in range(len(GENRES_100K)))]


def _parse(file: Path, sep: str, names: list[str],
           build: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """``build`` over ``file``'s fields; its errors ("line N: ...") get the file's name."""
    try:
        return build(_read(file, sep, names))
    except DataError as exc:
        raise DataError(f"{file}: {exc}") from None


def _read(file: Path, sep: str, names: list[str]) -> pl.DataFrame:
    """``file`` (latin-1) as string columns ``names`` split on ``sep``, plus ``_line``.

    Lines are read as one column and split by expression: ``::`` is not a single-byte CSV
    separator, and titles hold quotes a CSV reader would interpret. A line with too few
    fields is an error naming its number; empty lines are skipped.
    """
    text = file.read_bytes().decode("latin-1").encode("utf-8")
    if not text.strip():
        raise DataError("the file is empty")
    try:  # one column per line: \x1f (ASCII unit separator) is in no MovieLens text
        lines = pl.read_csv(io.BytesIO(text), has_header=False, separator="\x1f",
                            quote_char=None, infer_schema=False, new_columns=["raw"])
    except pl.exceptions.PolarsError:
        raise DataError("cannot be read as lines of text; is this MovieLens?") from None
    lines = lines.with_row_index("_line", offset=1).filter(pl.col("raw").str.strip_chars() != "")
    split = lines.select("_line", pl.col("raw").str.splitn(sep, len(names))
                         .struct.rename_fields(names)).unnest("raw")
    short = split.filter(pl.col(names[-1]).is_null())
    if short.height:
        raise DataError(f"line {short['_line'][0]}: expected {len(names)} "
                        f"{sep!r}-separated fields ({', '.join(names)}); is this MovieLens?")
    return split


def _int(df: pl.DataFrame, column: str) -> pl.Series:
    """``column`` as integers; a value that is not one is an error naming its line and value."""
    values = df[column].str.strip_chars().cast(pl.Int64, strict=False)
    bad = df.filter(values.is_null())
    if bad.height:
        raise DataError(f"line {bad['_line'][0]}: {column} must be an integer, got "
                        f"{bad[column][0]!r}")
    return values


def _occupation_name(df: pl.DataFrame) -> pl.Series:
    """ML-1M's occupation codes as names; an unknown code stays as its number."""
    codes = _int(df, "occupation")
    return codes.replace_strict(dict(enumerate(OCCUPATIONS_1M)), default=codes.cast(pl.String),
                                return_dtype=pl.String)


def _users(df: pl.DataFrame) -> pl.DataFrame:
    zip_prefix = df["zip"].str.strip_chars().str.slice(0, 1)
    return pl.DataFrame({
        "user_id": _int(df, "user"),
        "categorical": pl.DataFrame({
            "gender": df["gender"].str.strip_chars(),
            "occupation": df["occupation"].cast(pl.String).str.strip_chars(),
            "zip_prefix": zip_prefix.replace("", None),
        }).to_struct(),
        "continuous": pl.DataFrame({"age": _int(df, "age").cast(pl.Float64)}).to_struct(),
    })


def _items(ids: pl.Series, raw_title: pl.Series, year: pl.Series,
           genres: pl.Series) -> pl.DataFrame:
    """The item section; ``title`` loses its trailing "(year)", which ``year`` carries."""
    title = raw_title.str.replace(r"\s*" + _YEAR_IN_TITLE, "").str.strip_chars()
    return pl.DataFrame({
        "item_id": ids,
        "categorical": pl.DataFrame({"genres": genres}).to_struct(),
        "continuous": pl.DataFrame({"year": year.cast(pl.Float64)}).to_struct(),
        "text": pl.DataFrame({"title": title.replace("", None)}).to_struct(),
    })


def _items_100k(df: pl.DataFrame) -> pl.DataFrame:
    flags = [_int(df, f"g{k}") for k in range(len(GENRES_100K))]
    genres = pl.DataFrame(flags).select(pl.concat_list(
        pl.when(pl.col(f.name) != 0).then(pl.lit(name)) for f, name in zip(flags, GENRES_100K,
                                                                             strict=True)
    ).list.drop_nulls()).to_series()
    year = df["released"].str.extract(r"(\d{4})\s*$").fill_null(
        df["title"].str.extract(_YEAR_IN_TITLE)).cast(pl.Int64)
    return _items(_int(df, "item"), df["title"], year, genres)


def _items_1m(df: pl.DataFrame) -> pl.DataFrame:
    genres = df["genres"].str.strip_chars().str.split("|").list.eval(
        pl.element().filter(pl.element() != ""))
    year = df["title"].str.extract(_YEAR_IN_TITLE).cast(pl.Int64)
    return _items(_int(df, "item"), df["title"], year, genres)


def _ratings(df: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"user_id": _int(df, "user"), "item_id": _int(df, "item"),
                         "rating": _int(df, "rating"), "timestamp": _int(df, "ts")})
