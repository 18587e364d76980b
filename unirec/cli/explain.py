"""``unirec explain`` and the ``--explain`` side of ``unirec recommend``: why items are
recommended (``unirec.serve.explain``; imports torch, unlike plain ``recommend``)."""

from __future__ import annotations

from pathlib import Path

import click

from unirec.cli.common import FORMAT_OPTION, STORE_OPTION
from unirec.errors import require_extra

TOP_OPTION = click.option("--top", type=click.IntRange(1), default=3, show_default=True,
                          help="Contributions shown per item and kind (history, user "
                          "features, item features).")


def explain_users(store: Path, users: list[str], items: list[str] | None, k: int, top: int,
                  exclude_seen: bool, fmt: str, out: Path | None = None) -> None:
    """Print (or write to ``out``) the long explanation rows of ``users``."""
    require_extra("train", "explanations (the towers compute them)")
    from unirec.render import render_columns
    from unirec.serve.explain import explain_rows

    columns = explain_rows(users, items, k, top, store=store, exclude_seen=exclude_seen)
    if fmt == "table" and len(users) == 1:
        columns.pop("user_id")
    text = render_columns(columns, fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)


def explain_all_users(store: Path, k: int, top: int, exclude_seen: bool) -> None:
    """Write the ``explanations`` table; say so on stderr."""
    require_extra("train", "explanations (the towers compute them)")
    from unirec.serve.explain import write_explanations

    n = write_explanations(store, k, top, exclude_seen=exclude_seen)
    click.echo(f"wrote {n} rows to the explanations table in {store} (query it with "
               f"unirec sql \"SELECT * FROM explanations LIMIT 20\" --store {store})", err=True)


@click.command()
@STORE_OPTION
@click.option("--user", required=True, help="A user id.")
@click.option("--item", "items", multiple=True,
              help="An item id to explain; repeatable, or comma-separated. Default: the "
              "user's top-K.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True,
              help="Without --item: explain this many top items.")
@TOP_OPTION
@click.option("--include-seen", is_flag=True, help="Rank items the user interacted with too.")
@FORMAT_OPTION
def explain(store: Path, user: str, items: tuple[str, ...], k: int, top: int,
            include_seen: bool, fmt: str) -> None:
    """Why items are recommended to a user: the history items that pull each one up most and
    the user and item features that matter most (score deltas through the towers). There is
    no ranking stage yet, so these are the retrieval model's reasons."""
    ids = [i.strip() for text in items for i in text.split(",") if i.strip()] or None
    explain_users(store, [user], ids, k, top, not include_seen, fmt)
