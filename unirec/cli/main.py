"""The command line: one thin click command per verb over the Python API.

Data goes to stdout; progress and warnings to stderr. A ``UnirecError`` becomes one
``Error: ...`` line and exit code 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from unirec.cli.common import FORMAT_OPTION, STORE_OPTION
from unirec.errors import UnirecError, extra_of, missing_extra, require_extra
from unirec.version import __version__


class UnirecGroup(click.Group):
    """Turns the errors users can fix into one line and exit code 1.

    A module of an optional extra that is not installed is such an error too: every verb
    checks its extras up front (``require_extra``), and this catches any import that slips
    past, so a core install never shows an ImportError traceback. A Ctrl-C that DuckDB
    rewrote as an error (``store.interrupt.interrupted``) goes back to being a Ctrl-C.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UnirecError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            extra = extra_of(exc.name)
            if extra is None:
                raise
            what = f"`unirec {ctx.invoked_subcommand}` ({exc.name} is not installed)"
            click.echo(f"Error: {missing_extra(extra, what)}", err=True)
            sys.exit(1)
        except RuntimeError as exc:
            from unirec.store.interrupt import interrupted

            if not interrupted(exc):
                raise
            # DuckDB took a Ctrl-C inside a query: click's own "Aborted!", not a traceback
            raise KeyboardInterrupt from exc


@click.group(cls=UnirecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unirec")
def cli() -> None:
    """unirec: one JSON document of users, items and interactions in; a recommender out."""


@cli.command()
@click.argument("data")
@STORE_OPTION
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A JSON or TOML config file.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config field; repeatable.")
@click.option("--on-unknown-user", type=click.Choice(["error", "drop"]),
              help="Interactions naming a user absent from user_data.")
@click.option("--on-unknown-item", type=click.Choice(["error", "drop"]),
              help="Interactions naming an item absent from item_data.")
@click.option("--on-duplicate-id", type=click.Choice(["error", "first"]),
              help="Two user (or item) records with one id.")
@click.option("--on-bad-timestamp", type=click.Choice(["error", "drop"]),
              help="Interactions whose timestamp is missing or does not parse.")
@click.option("--split", type=click.Choice(["user-time", "global-time", "none"]),
              help="How interactions split into train/validation/test (split.strategy).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print every feature's op, output shape and vocabulary, and the split and "
                   "sample plan; write nothing.")
@click.option("--append", is_flag=True,
              help="Fold DATA (new interactions, new or changed users and items) into the "
                   "existing store: indices and fitted statistics kept (docs/incremental.md).")
@click.option("--refit-stats", is_flag=True,
              help="With --append: refit every statistic and vocabulary over old + new "
                   "(a full rebuild; the model then needs a full `unirec fit`).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]),
              help="What runs the plan (ingest.engine): duckdb on this machine (default) or "
                   "spark (a folder of JSONL/Parquet; needs the spark extra and Java 17+).")
@click.option("--spark-master", metavar="URL",
              help="spark.master for --engine spark, e.g. local[4] or spark://host:7077 "
                   "(default local[2]).")
def featurize(data: str, store: Path, config_file: Path | None, overrides: tuple[str, ...],
              split: str | None, plan_only: bool, append: bool, refit_stats: bool,
              engine: str | None, spark_master: str | None,
              **policies: str | None) -> None:
    """Compile DATA (a JSON document, or a folder of users/items/interactions .jsonl or
    .parquet files; with --engine spark also a URI such as s3a://, hdfs://, file://) into
    the feature store."""
    from unirec.config import load_config
    from unirec.errors import ConfigError
    from unirec.featurize import featurize as run

    flags = {f"validate.{k}": v for k, v in policies.items()}
    flags["split.strategy"] = split
    flags["ingest.engine"] = engine
    flags["spark.master"] = spark_master
    cfg = load_config(config_file, overrides, flags)
    if refit_stats and not append:
        raise ConfigError("--refit-stats goes with --append (a plain featurize always fits)")
    if append and (plan_only or split or config_file or overrides):
        raise ConfigError("--append compiles with the store's own config: leave out --plan, "
                          "--split, --config and --set (a changed config is a full "
                          "`unirec featurize`)")
    if plan_only:
        _print_plan(run(data, store, cfg, plan_only=True))
        return
    if append:
        report = run(data, store, _store_config(store, policies), append=True,
                     refit_stats=refit_stats)
    else:
        report = run(data, store, cfg)
    sec = report["sections"]
    if append:
        c = report["append"]["counts"]
        click.echo(f"appended {c['interactions']} interactions, {c['users_new']} new users "
                   f"({c['users_changed']} changed), {c['items_new']} new items "
                   f"({c['items_changed']} changed) into {store} in {report['seconds']:.1f}s")
    else:
        click.echo(
            f"featurized {sec['user_data']['kept']} users, {sec['item_data']['kept']} items, "
            f"{sec['interactions']['kept']} interactions into {store} in "
            f"{report['seconds']:.1f}s")
    for name, s in sec.items():
        for reason, n in s["dropped"].items():
            click.echo(f"warning: dropped {n} {name} records ({reason})", err=True)
    for w in report["warnings"]:
        click.echo(f"warning: {w['section']}: {w['field']}: {w['message']} ({w['count']})",
                   err=True)


def _store_config(store: Path, policies: dict[str, str | None]) -> Any:
    """The config ``store`` was featurized with, plus the --on-* flags given (how to read
    the appended records); None when there is no store (the append says so)."""
    import json

    from unirec.config import Config

    try:
        stored = json.loads((Path(store) / "manifest.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None
    stored.setdefault("validate", {}).update({k: v for k, v in policies.items() if v})
    try:
        return Config.model_validate(stored)
    except ValueError:  # a config of another version: the append says what to run
        return None


@cli.command()
@STORE_OPTION
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A JSON or TOML config file (its train section applies).")
@click.option("--set", "overrides", multiple=True, metavar="train.KEY=VALUE",
              help="Override one config field, e.g. --set train.dim=128; repeatable.")
@click.option("--epochs", type=click.IntRange(1), help="train.epochs")
@click.option("--fusion", type=str, help="train.fusion: simple or attention.")
@click.option("--loss", type=str, help="train.loss: softmax, bce or bpr.")
@click.option("--resume", is_flag=True, help="Continue from the last epoch's checkpoint.")
@click.option("--warm-start", is_flag=True,
              help="Continue the current model after `featurize --append`: old weights kept, "
                   "trained on the appended samples plus a replay share of older ones "
                   "(train.warm_start.*).")
def fit(store: Path, config_file: Path | None, overrides: tuple[str, ...], epochs: int | None,
        fusion: str | None, loss: str | None, resume: bool, warm_start: bool) -> None:
    """Train the two-tower model on the store; writes STORE/model."""
    from unirec.config import load_config
    from unirec.train import fit as run

    cfg = load_config(config_file, overrides, {"train.epochs": epochs, "train.fusion": fusion,
                                               "train.loss": loss})
    summary = run(store, cfg, resume=resume, warm_start=warm_start)
    if not summary:  # a non-zero torchrun rank
        return
    best = summary["best"]
    metrics = ", ".join(f"{k[4:]}={v:.4f}" for k, v in best.items() if k.startswith("val_"))
    how = "warm-started and trained" if warm_start else "trained"
    click.echo(f"{how} {summary['epochs']} epochs; best epoch {summary['best_epoch']}: "
               f"{metrics or 'no validation slice'}; model in {store / 'model'}")
    aff = summary.get("new_item_affinity")
    if aff:
        click.echo(f"new items: category affinity from {', '.join(aff['fields'])} "
                   f"({aff['columns']} columns after the towers' {summary['dim']}, "
                   "unirec.model.affinity)")
    rank = summary.get("rank")
    if rank:
        val = rank.get("validation") or {}
        k = cfg.train.eval_k
        figures = (f": validation NDCG@{k} {val[f'val_rank_ndcg@{k}']:.4f} against "
                   f"{val[f'val_retrieval_ndcg@{k}']:.4f} for retrieval alone "
                   f"({val.get('val_rank_gain_z', 0.0):+.1f} standard errors)"
                   if f"val_rank_ndcg@{k}" in val else "")
        why = rank.get("note") or "it did not beat retrieval by train.rank.min_z " \
            f"({cfg.train.rank.min_z:g}) standard errors"
        state = "in use" if rank["active"] else f"not used ({why})"
        click.echo(f"ranking stage ({rank['model']}, epoch {rank['best_epoch']}){figures}; "
                   f"{state}")
        _echo_rescore(rank.get("rescore"), k, cfg.train.rank.min_z)


def _echo_rescore(rescore: dict | None, k: int, min_z: float) -> None:
    """The fit summary's line for train.rank.rescore, when it ran or was left out."""
    if not rescore:
        return
    val = rescore.get("validation") or {}
    figures = (f": validation NDCG@{k} {val[f'val_rescore_ndcg@{k}']:.4f} against "
               f"{val[f'val_retrieval_ndcg@{k}']:.4f} for retrieval alone "
               f"({val.get('val_rescore_gain_z', 0.0):+.1f} standard errors)"
               if f"val_rescore_ndcg@{k}" in val else "")
    why = rescore.get("note") or f"it did not beat retrieval by train.rank.min_z ({min_z:g}) " \
        "standard errors"
    state = "in use" if rescore["active"] else f"not used ({why})"
    if "best_epoch" not in rescore:  # not trained (a warm start, torchrun)
        click.echo(f"rescoring model: {state}")
        return
    click.echo(f"rescoring model (temperature {rescore['temperature']}, epoch "
               f"{rescore['best_epoch']}){figures}; {state}")


@cli.command()
@STORE_OPTION
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The base config (trial 0); its train section applies.")
@click.option("--set", "overrides", multiple=True, metavar="train.KEY=VALUE",
              help="Override one base setting, e.g. --set train.epochs=10; repeatable.")
@click.option("--trials", type=click.IntRange(1), help="Trials to run (default 20 when no "
              "--timeout).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True),
              help="Seconds after which no new trial starts.")
@click.option("--param", "params", multiple=True, metavar="NAME=LOW:HIGH[:log]|NAME=A,B,C",
              help="Search this train setting over a range or choices; repeatable. Replaces "
                   "that setting's default range.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A TOML/JSON search space replacing the default one "
                   "(name = [choices] or name = \"low:high[:log]\").")
@click.option("--metric", default="ndcg@10", show_default=True,
              help="Validation metric to maximise (a val_* column of fit's metrics).")
@click.option("--seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop a trial whose metric trails the median of earlier ones at an epoch.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="tuned.toml",
              show_default=True, help="Best config file (.toml or .json) for fit --config.")
@FORMAT_OPTION
def tune(store: Path, config_file: Path | None, overrides: tuple[str, ...], trials: int | None,
         timeout: float | None, params: tuple[str, ...], space_file: Path | None, metric: str,
         seed: int, prune: bool, out: Path, fmt: str) -> None:
    """Search train settings on the store's validation slice (Optuna); Ctrl-C keeps the best.

    Trial 0 runs the base config. Every trial goes to the SQL table tuning_trials and the
    table below; the best config to --out, for `unirec fit --config`.
    """
    require_extra("tune", "`unirec tune`")
    require_extra("train", "`unirec tune` (each trial is a fit)")
    from unirec.config import load_config
    from unirec.tune import DEFAULT_SPACE, load_space, parse_param
    from unirec.tune import tune as run

    cfg = load_config(config_file, overrides)
    space = None
    if space_file is not None or params:
        given = {p.name: p for p in (load_space(space_file) if space_file else DEFAULT_SPACE)}
        given.update({p.name: p for p in map(parse_param, params)})
        space = list(given.values())
    result = run(store, cfg, trials=trials, timeout=timeout, space=space, metric=metric,
                 seed=seed, prune=prune, out=out)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    _render(result.trials, fmt)
    stopped = "stopped by Ctrl-C; " if result.interrupted else ""
    if result.best:
        click.echo(f"{stopped}best: trial {result.best['trial']}, validation {metric} = "
                   f"{result.best['value']:.4f}; config in {result.config_path} "
                   f"(unirec fit --config {result.config_path}); trials in table "
                   f"tuning_trials", err=True)
    else:
        click.echo(f"{stopped}no trial completed; nothing written to {out}", err=True)


@cli.command()
@click.argument("query")
@STORE_OPTION
@FORMAT_OPTION
def sql(query: str, store: Path, fmt: str) -> None:
    """Run a read-only SQL QUERY on the store ('-' reads it from stdin)."""
    from unirec.store import Store

    if query == "-":
        query = sys.stdin.read()
    _render(Store(store).sql(query), fmt)


@cli.command()
@STORE_OPTION
@click.option("--counts", is_flag=True, help="Also count each table's rows.")
@FORMAT_OPTION
def tables(store: Path, counts: bool, fmt: str) -> None:
    """List the store's tables."""
    import polars as pl

    from unirec.store import Store

    st = Store(store)
    if counts:
        frame = pl.DataFrame(list(st.counts().items()), schema=["table", "rows"], orient="row")
    else:
        frame = pl.DataFrame({"table": st.tables()})
    _render(frame, fmt)


@cli.command()
@click.argument("table")
@STORE_OPTION
@FORMAT_OPTION
def schema(table: str, store: Path, fmt: str) -> None:
    """Show the columns and types of TABLE."""
    from unirec.store import Store

    _render(Store(store).schema(table), fmt)


@cli.group()
def datasets() -> None:
    """Generate or convert datasets into unirec's input format."""


@datasets.command("synthetic")
@click.option("--users", "n_users", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--items", "n_items", type=click.IntRange(1), default=500, show_default=True)
@click.option("--interactions", "n_interactions", type=click.IntRange(1), default=20_000,
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images/--no-images", default=False, help="Also draw one small PNG per item.")
@click.option("--format", "fmt",
              type=click.Choice(["document", "folder", "jsonl", "parquet"]),
              default="document", show_default=True,
              help="One data.json document, or a folder of users/items/interactions files: "
              "folder (= jsonl) or parquet, the streaming form for large inputs.")
@click.option("--holdout-items", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, metavar="FRACTION",
              help="Hold this share of the items out of training: they keep their records, "
                   "their interactions go to holdout.csv (ids in new_items.csv).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder.")
def synthetic(n_users: int, n_items: int, n_interactions: int, seed: int, images: bool,
              fmt: str, holdout_items: float, out: Path) -> None:
    """A dataset with planted, learnable structure in every feature kind."""
    from unirec.datasets import synthesize, write_document, write_folder, write_holdout

    if images:
        require_extra("train", "`unirec datasets synthetic --images` (Pillow draws them)")
    out.mkdir(parents=True, exist_ok=True)
    data = synthesize(n_users, n_items, n_interactions, seed=seed,
                      images_dir=out / "images" if images else None,
                      holdout_items=holdout_items)
    for path in write_holdout(data, out):
        click.echo(f"held out: {path}", err=True)
    if fmt == "document":
        write_document(data, out / "data.json")
        click.echo(str(out / "data.json"))
    else:
        write_folder(data, out, fmt="jsonl" if fmt == "folder" else fmt)
        click.echo(str(out))


@datasets.command("movielens")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSON document to write.")
def movielens(path: Path, out: Path) -> None:
    """Convert raw MovieLens-100K or -1M files in PATH into one input document.

    The layout is detected from the files present (u.data/u.item/u.user or
    ratings.dat/movies.dat/users.dat). MovieLens may not be redistributed: keep the output
    out of version control.
    """
    from unirec.datasets import convert_movielens, write_document

    frames = convert_movielens(path)
    write_document(frames, out)
    click.echo(f"{frames['user_data'].height} users, {frames['item_data'].height} items, "
               f"{frames['interactions'].height} ratings", err=True)
    click.echo(str(out))


@cli.command()
@click.option("--onnx", "onnx_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for user_tower.onnx, item_tower.onnx, towers.json.")
@STORE_OPTION
def export(onnx_dir: Path, store: Path) -> None:
    """Export the fitted user and item towers as ONNX (dynamic batch size)."""
    require_extra("train", "`unirec export` (the towers are torch modules)")
    require_extra("onnx", "`unirec export`")
    from unirec.serve.export import export_onnx

    spec = export_onnx(store, onnx_dir)
    for side, tower in spec["towers"].items():
        names = ", ".join(i["name"] for i in tower["inputs"])
        click.echo(f"{onnx_dir / tower['file']}: {side} tower ({names}) -> {spec['dim']}-d")


@cli.command()
@STORE_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--cold/--no-cold", default=None,
              help="Load the towers for POSTed records of new users/items (imports torch; "
                   "the train extra). Default: on where the train extra is installed.")
@click.option("--images", "image_dirs", multiple=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Another folder POSTed records may name images in (besides the store's "
                   "input folder); repeatable.")
def serve(store: Path, host: str, port: int, cold: bool | None,
          image_dirs: tuple[Path, ...]) -> None:
    """Serve recommendations over HTTP (JSON: /recommend, /similar, /explain, /health) and
    the explorer, a web page of users, items and recommendations, at /."""
    require_extra("serve", "`unirec serve`")
    if cold is None:
        try:
            require_extra("train", "cold start")
            cold = True
        except UnirecError as exc:
            click.echo(f"note: cold start is off: {exc}", err=True)
            cold = False
    from unirec.serve.http import serve as run

    run(store, host, port, cold=cold, image_dirs=list(image_dirs))


def _print_plan(plan: dict[str, Any]) -> None:
    import polars as pl

    from unirec.featurize.progress import plan_rows

    sec = plan["sections"]
    click.echo(f"input: {plan['input']['path']} ({plan['input']['form']}): "
               f"{sec['user_data']['kept']} users, {sec['item_data']['kept']} items, "
               f"{sec['interactions']['kept']} interactions")
    _render(pl.DataFrame(plan_rows(plan)), "table")
    emb = plan["embeddings"]
    click.echo(f"text: {emb['text']['distinct_strings']} distinct strings -> "
               f"{emb['text']['model']}; images: {emb['image']['distinct_files']} files -> "
               f"{emb['image']['model']}")
    click.echo(f"split: {_kv(plan['split'])}")
    click.echo(f"samples: {_kv(plan['samples'])}")


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _render(frame: Any, fmt: str) -> None:
    from unirec.render import render

    click.echo(render(frame, fmt), nl=False)


def _add_serving_commands() -> None:
    from unirec.cli.serve import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_add_serving_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
