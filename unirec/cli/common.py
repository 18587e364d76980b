"""Options shared by the command modules (``unirec.cli`` and ``unirec.cli.serve``)."""

from __future__ import annotations

from pathlib import Path

import click

STORE_OPTION = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default="unirec-store",
    envvar="UNIREC_STORE",
    show_default=True,
    help="The feature store folder (env UNIREC_STORE).",
)
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
    show_default=True, help="table for people, json or csv for programs.",
)
