"""The featurize stage: compile a JSON document (or a folder of sections) into a store.

``featurize`` is a thin wrapper so that ``import unirec`` does not pull in polars, pyarrow
and the compiler: the serving path (``unirec recommend``) must start in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unirec.config import Config


def featurize(data: str | Path, store: str | Path = "unirec-store",
              config: Config | None = None, *, plan_only: bool = False, append: bool = False,
              refit_stats: bool = False) -> dict[str, Any]:
    """Compile ``data`` (a JSON document or a folder of sections) into the store at ``store``.

    Returns the report (also written to ``report.json``); with ``plan_only`` returns the
    plan and writes nothing. ``append`` folds ``data`` into the existing store, indices
    and fitted statistics kept (``refit_stats``: refitted). See
    ``unirec.featurize.run.featurize`` and ``unirec.featurize.append``.
    """
    from unirec.featurize.run import featurize as run

    return run(data, store, config, plan_only=plan_only, append=append,
               refit_stats=refit_stats)


__all__ = ["featurize"]
