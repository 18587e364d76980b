"""The serving verbs of the CLI: recommend, similar, score, embed, evaluate.

Each is a few lines over ``unirec.serve.api``. Known ids never import torch; ``--user-json``
and ``--item-json`` (records of new users or items) do, since they run the towers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from unirec.cli.common import FORMAT_OPTION, STORE_OPTION
from unirec.cli.explain import TOP_OPTION, explain, explain_all_users, explain_users
from unirec.errors import QueryError

K_OPTION = click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True,
                        help="How many items.")
CANDIDATES_OPTION = click.option(
    "--candidates", type=click.Path(dir_okay=False, path_type=Path),
    help="A CSV file with an item_id column: rank only these items.")


def _records(text: str, option: str) -> list[dict[str, Any]]:
    """A JSON object or list of objects, inline or ``@FILE``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise QueryError(f"{option}: cannot read {text[1:]!r}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(f"{option} is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    records = value if isinstance(value, list) else [value]
    if not records or not all(isinstance(r, dict) for r in records):
        raise QueryError(f"{option} must be a JSON object (a record) or a list of objects")
    return records


def _split_ids(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _echo(columns: dict[str, Any], fmt: str, out: Path | None = None) -> None:
    from unirec.render import render_columns

    text = render_columns(columns, fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)


def _with_titles(store: Path, columns: dict[str, Any], item_ids: np.ndarray) -> dict[str, Any]:
    from unirec.serve.recommender import Recommender

    rec = Recommender.load(store)
    if rec.title_field:
        columns[rec.title_field] = rec.titles(rec.item_index(list(item_ids)))
    return columns


@click.command()
@STORE_OPTION
@click.option("--user", help="One user id.")
@click.option("--users", help="Several user ids, comma-separated.")
@click.option("--users-file", type=click.Path(dir_okay=False, path_type=Path),
              help="User ids, one per line (or a CSV with a user_id column).")
@click.option("--all-users", is_flag=True,
              help="Every user: user_id,item_id,rank,score rows (csv; json = JSON lines).")
@click.option("--user-json", help="A new user's record as JSON (or @FILE); a list for many. "
              "A \"history\" list of item ids conditions the answer and is excluded.")
@K_OPTION
@click.option("--include-seen", is_flag=True, help="Keep items the user interacted with.")
@CANDIDATES_OPTION
@click.option("--fallback", type=click.Choice(["popular"]),
              help="Answer unknown users with the most popular items instead of an error.")
@click.option("--ann", is_flag=True, help="Approximate search (HNSW, the ann extra) instead "
              "of the exact scan: for catalogues of millions. Built on first use.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout (--all-users: .parquet writes Parquet).")
@click.option("--explain", "why", is_flag=True, help="Say why: per item, the history items "
              "and features that matter most (see `unirec explain`); with --all-users, into "
              "the store's explanations table.")
@TOP_OPTION
@FORMAT_OPTION
def recommend(store: Path, user: str | None, users: str | None, users_file: Path | None,
              all_users: bool, user_json: str | None, k: int, include_seen: bool,
              candidates: Path | None, fallback: str | None, ann: bool, out: Path | None,
              why: bool, top: int, fmt: str) -> None:
    """Top-K items for users, with the items they have seen left out."""
    from unirec.serve import api

    given = [x for x in (user, users, users_file, user_json) if x is not None] + \
        ([True] if all_users else [])
    if len(given) != 1:
        raise click.UsageError("give exactly one of --user, --users, --users-file, "
                               "--all-users, --user-json")
    if why:
        if user_json is not None or candidates is not None or fallback or ann:
            raise click.UsageError("--explain works with known users, without --candidates, "
                                   "--fallback and --ann")
        if all_users:
            explain_all_users(store, k, top, not include_seen)
            return
        names = [user] if user is not None else _split_ids(users) if users is not None \
            else api.read_ids(users_file, "user_id", "users", plain=True)
        explain_users(store, names, None, k, top, not include_seen, fmt, out)
        return
    if all_users:
        _all_users(store, k, not include_seen, candidates, out, fmt)
        return
    opts = {"store": store, "exclude_seen": not include_seen, "candidates": candidates,
            "ann": ann}
    if user_json is not None:
        records = _records(user_json, "--user-json")
        ids, scores = api.recommend(k=k, user_records=records, **opts)
        names = [r.get("user_id", f"record {i}") for i, r in enumerate(records)]
    elif user is not None:
        ids, scores = api.recommend(user, k, fallback=fallback, **opts)
        ranks = np.arange(1, len(ids) + 1)
        _echo(_with_titles(store, {"rank": ranks, "item_id": ids, "score": scores}, ids),
              fmt, out)
        return
    else:
        names = _split_ids(users) if users is not None else \
            api.read_ids(users_file, "user_id", "users", plain=True)
        if not names:
            raise QueryError("no user ids given")
        ids, scores = api.recommend(names, k, fallback=fallback, **opts)
    keep = ~np.isnan(scores)
    rows, cols = np.nonzero(keep)
    columns = {"user_id": np.asarray(names, dtype=object)[rows], "rank": cols + 1,
               "item_id": ids[rows, cols], "score": scores[rows, cols]}
    _echo(_with_titles(store, columns, ids[rows, cols]), fmt, out)


def _all_users(store: Path, k: int, exclude_seen: bool, candidates: Path | None,
               out: Path | None, fmt: str) -> None:
    """Stream every user's top-K in blocks, so memory stays flat in the number of users."""
    from unirec.serve import api

    writer = None
    sink = out.open("w") if out is not None and out.suffix != ".parquet" else None
    try:
        for n, (user_ids, idx, item_ids, scores) in enumerate(
                api.all_users(k, store=store, exclude_seen=exclude_seen, candidates=candidates)):
            rows, cols = np.nonzero(idx > 0)
            block = {"user_id": user_ids[rows], "item_id": item_ids[rows, cols],
                     "rank": cols + 1, "score": scores[rows, cols]}
            if out is not None and out.suffix == ".parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table(block)
                writer = writer or pq.ParquetWriter(str(out), table.schema)
                writer.write_table(table)
                continue
            text = _block_text(block, fmt, header=n == 0)
            (sink.write if sink else click.echo)(text) if text else None
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()


def _block_text(block: dict[str, np.ndarray], fmt: str, header: bool) -> str:
    """CSV (or JSON lines) for one block, vectorized through pyarrow."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(block)
    if fmt == "json":
        return "\n".join(json.dumps(r) for r in table.to_pylist())
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False,
                                                   quoting_style="none"))
    head = ",".join(block) + "\n" if header else ""
    return head + buf.getvalue().decode().rstrip("\n")


@click.command()
@STORE_OPTION
@click.option("--item", help="An item id.")
@click.option("--item-json", help="A new item's record as JSON (or @FILE).")
@K_OPTION
@CANDIDATES_OPTION
@FORMAT_OPTION
def similar(store: Path, item: str | None, item_json: str | None, k: int,
            candidates: Path | None, fmt: str) -> None:
    """The items nearest to one item (the item itself left out)."""
    from unirec.serve import api

    if (item is None) == (item_json is None):
        raise click.UsageError("give exactly one of --item, --item-json")
    record = _records(item_json, "--item-json")[0] if item_json is not None else None
    ids, scores = api.similar(item, k, store=store, candidates=candidates, item_record=record)
    columns = {"rank": np.arange(1, len(ids) + 1), "item_id": ids, "score": scores}
    _echo(_with_titles(store, columns, ids), fmt)


@click.command()
@STORE_OPTION
@click.option("--user", help="A user id.")
@click.option("--user-json", help="A new user's record as JSON (or @FILE).")
@click.option("--item", "items", multiple=True, required=True,
              help="An item id; repeatable, or comma-separated.")
@FORMAT_OPTION
def score(store: Path, user: str | None, user_json: str | None, items: tuple[str, ...],
          fmt: str) -> None:
    """The model's score (cosine similarity) of items for one user."""
    from unirec.serve import api

    if (user is None) == (user_json is None):
        raise click.UsageError("give exactly one of --user, --user-json")
    record = _records(user_json, "--user-json")[0] if user_json is not None else None
    from unirec.serve.recommender import Recommender

    ids = [i for text in items for i in _split_ids(text)]
    values = api.score(user, ids, store=store, user_record=record)
    rec = Recommender.load(store)
    known = rec.item_ids(rec.item_index(ids))
    _echo(_with_titles(store, {"item_id": known, "score": values}, known), fmt)


@click.command()
@click.argument("side", type=click.Choice(["users", "items"]))
@STORE_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="FILE.parquet (id + embedding list), .npy (vectors only) or .csv.")
def embed(side: str, store: Path, out: Path) -> None:
    """Write every user's or item's vector to a file."""
    from unirec.serve import api

    ids, vectors = api.embeddings(side, store=store)
    id_col = "user_id" if side == "users" else "item_id"
    if out.suffix == ".npy":
        np.save(out, vectors)
    elif out.suffix in (".parquet", ".csv"):
        import pyarrow as pa

        table = pa.table({id_col: ids, "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])})
        if out.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, str(out))
        else:
            import pyarrow.csv as pacsv

            cols = {id_col: ids, **{f"e{j}": vectors[:, j] for j in range(vectors.shape[1])}}
            pacsv.write_csv(pa.table(cols), str(out))
    else:
        raise QueryError(f"--out must end in .parquet, .npy or .csv, not {out.suffix!r}")
    click.echo(f"wrote {len(ids)} {side[:-1]} vectors of dim {vectors.shape[1]} to {out}",
               err=True)


@click.command()
@STORE_OPTION
@K_OPTION
@click.option("--recs-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the top-K lists as user_id,item_id,rank CSV.")
@FORMAT_OPTION
def evaluate(store: Path, k: int, recs_out: Path | None, fmt: str) -> None:
    """Recall, NDCG, HR, Precision, MAP@K and coverage on the store's test split."""
    from unirec.serve.evaluate import evaluate as run

    result = run(store, k, recs_out)
    if fmt == "json":
        click.echo(json.dumps(result))
        return
    _echo({"metric": list(result), "value": list(result.values())}, fmt)
    sys.stdout.flush()


COMMANDS = [recommend, similar, score, embed, evaluate, explain]
