"""``unirec tune``: hyper-parameter search over ``train.*`` on the store's validation slice.

Why: the defaults are tuned on MovieLens-100K; another catalogue wants other settings, and
a search by hand costs a user days. Optuna (the ``tune`` extra) samples ``train`` settings
with TPE and prunes a trial whose validation metric, reported after each epoch through
``fit``'s ``on_epoch`` hook, trails the median of earlier trials at the same epoch.

- The objective is the store's **validation** slice (``val_<metric>`` of ``fit``'s rows, the
  best epoch's): test is never read, so a tuned model can still be judged on test.
- **Trial 0 is the base config** (defaults, ``--config`` and ``--set``): the best trial is at
  least as good as what the user would get without tuning, by construction.
- Trials train in a scratch copy of the store beside it (shards and tensors hard-linked), so
  the store's own model and tables stay as they were until the end, when the trials go to
  the SQL table ``tuning_trials`` and the best config to a file ``unirec fit --config`` takes.
  That file is rewritten after every trial that beats the best so far, so Ctrl-C (or a
  ``--timeout``: no trial starts after it) stops cleanly and keeps the best so far.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from unirec.config import Config, TrainConfig
from unirec.errors import ConfigError, StoreError, require_extra
from unirec.registry import did_you_mean
from unirec.store import DB_FILE, Store, connect_for_write
from unirec.store.atomic import link_or_copy, write_file
from unirec.store.interrupt import interrupted

TABLE = "tuning_trials"


@dataclass(frozen=True)
class Param:
    """One searched ``train`` setting: a range ``low..high`` (log-scaled or not) or choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high),  # type: ignore
                                   log=self.log)

    def including(self, value: Any) -> Param:
        """The same search widened to contain ``value`` (the base config runs as trial 0)."""
        if self.choices is not None:
            return self if value in self.choices else replace(
                self, choices=(*self.choices, value))
        if self.low <= value <= self.high:  # type: ignore[operator]
            return self
        return replace(self, low=min(self.low, value), high=max(self.high, value))  # type: ignore

    def describe(self) -> str:
        if self.choices is not None:
            return ",".join(map(str, self.choices))
        return f"{self.low}:{self.high}" + (":log" if self.log else "")


# Sensible ranges around the defaults; a name missing from TrainConfig is skipped.
DEFAULT_SPACE: tuple[Param, ...] = (
    Param("lr", 1e-4, 2e-2, log=True),
    Param("dim", choices=(32, 64, 128)),
    Param("temperature", 0.03, 0.5, log=True),
    Param("id_dropout", 0.0, 0.6),
    Param("weight_decay", 1e-7, 1e-2, log=True),
    Param("negatives", choices=(0, 64, 256, 1024)),
    Param("dropout", 0.0, 0.3),
)


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(text: str) -> Param:
    """``NAME=LOW:HIGH[:log]`` (a range; integers when both ends are) or ``NAME=A,B,C``."""
    name, sep, spec = text.partition("=")
    name = name.strip().removeprefix("train.")
    if not sep or not name or not spec.strip():
        raise ConfigError(f"--param {text!r}: expected NAME=LOW:HIGH[:log] or NAME=A,B,C")
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
                raise ValueError("expected LOW:HIGH or LOW:HIGH:log")
            low, high = _number(parts[0]), _number(parts[1])
            if low > high:
                raise ValueError(f"low {low} is above high {high}")
            if len(parts) == 3 and low <= 0:
                raise ValueError("a log range needs low > 0")
            return Param(name, low, high, log=len(parts) == 3)
        choices = tuple(json.loads(v) if _is_json(v) else v.strip() for v in spec.split(","))
        return Param(name, choices=choices)
    except ValueError as exc:
        raise ConfigError(f"--param {text!r}: {exc}") from None


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def load_space(path: Path) -> list[Param]:
    """A space file (TOML or JSON): ``name = [choices]`` or ``name = "low:high[:log]"`` or
    ``name = {low = .., high = .., log = true}``; it replaces the default space."""
    from unirec.config import read_file

    params = []
    for name, spec in read_file(Path(path)).items():
        if isinstance(spec, list):
            params.append(Param(name.removeprefix("train."), choices=tuple(spec)))
        elif isinstance(spec, str):
            params.append(parse_param(f"{name}={spec}"))
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec):
            log = ":log" if spec.get("log") else ""
            params.append(parse_param(f"{name}={spec['low']}:{spec['high']}{log}"))
        else:
            raise ConfigError(f"space file {str(path)!r}: {name}: expected a list of choices, "
                              "'low:high[:log]' or {low, high, log}")
    return params


def resolve_space(params: list[Param] | tuple[Param, ...], base: TrainConfig,
                  strict: bool = True) -> tuple[dict[str, Param], list[str]]:
    """Checked space keyed by name, widened to contain the base config; and notes to print.

    Every bound and choice is validated as a ``TrainConfig`` value up front, so a bad range
    fails in one line before any training starts.
    """
    known = list(TrainConfig.model_fields)
    space: dict[str, Param] = {}
    notes: list[str] = []
    for p in params:
        if p.name not in known:
            if not strict:
                continue
            raise ConfigError(f"--param {p.name}: no such train setting"
                              f"{did_you_mean(p.name, known)}")
        values = p.choices if p.choices is not None else (p.low, p.high)
        for value in values:
            try:
                TrainConfig.model_validate({p.name: value})
            except ValidationError as exc:
                raise ConfigError(f"--param {p.name}: {value!r}: "
                                  f"{exc.errors()[0]['msg']}") from None
        base_value = getattr(base, p.name)
        wide = p.including(base_value)
        if wide != p:
            notes.append(f"{p.name}: search widened to {wide.describe()} to hold the base "
                         f"value {base_value} (trial 0 runs the base config)")
        space[p.name] = wide
    if not space:
        raise ConfigError("the search space is empty: give --param NAME=LOW:HIGH")
    return space, notes


@dataclass
class TuneResult:
    """What a search leaves: every trial, the best one, and where its config went."""

    trials: pl.DataFrame
    best: dict[str, Any] = field(default_factory=dict)  # trial, value, params
    metric: str = "ndcg@10"
    config_path: Path | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def tune(store: str | Path, config: Config | None = None, *, trials: int | None = None,
         timeout: float | None = None, space: list[Param] | None = None,
         metric: str = "ndcg@10", seed: int = 0, prune: bool = True,
         out: str | Path = "tuned.toml", progress: bool | None = None) -> TuneResult:
    """Search ``space`` (default ``DEFAULT_SPACE``) for ``trials`` trials or ``timeout``
    seconds; write ``tuning_trials`` into the store and the best config to ``out``."""
    require_extra("tune", "`unirec tune`")
    import optuna
    st = Store(store)
    if not st.manifest["shards"].get("val", {}).get("files"):
        raise StoreError("the store has no validation slice to tune on: featurize with "
                         "split.val_fraction > 0")
    base = config or Config()
    resolved, notes = resolve_space(space or DEFAULT_SPACE, base.train, strict=space is not None)
    key, out = f"val_{metric}", Path(out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if prune else optuna.pruners.NopPruner())
    study.enqueue_trial({n: getattr(base.train, n) for n in resolved})
    if trials is None and timeout is None:
        trials = 20
    result = TuneResult(pl.DataFrame(), metric=metric, notes=notes)
    with tempfile.TemporaryDirectory(prefix=f".{st.path.name}.tune-",
                                     dir=st.path.absolute().parent) as tmp:
        scratch = _scratch_copy(st.path, Path(tmp) / "store")
        objective = _Objective(scratch, base, resolved, key, prune)
        on_done = _Progress(trials, progress, base, out, result)
        try:
            study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[on_done],
                           catch=())
        except (KeyboardInterrupt, Exception) as exc:
            if not interrupted(exc):  # a Ctrl-C inside a DuckDB query comes as RuntimeError
                raise
            result.interrupted = True
        finally:
            on_done.close()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        result.trials = trials_frame(study, resolved, metric, result.interrupted)
        if result.trials.height:
            write_table(st.path, TABLE, result.trials)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return result


class _LastEpoch(Exception):
    """Raised after a trial's last epoch: its metrics are in, its outputs are not needed."""


class _Objective:
    """One trial: the base config with the sampled settings, fitted in the scratch store."""

    def __init__(self, scratch: Path, base: Config, space: dict[str, Param], key: str,
                 prune: bool) -> None:
        self.scratch, self.base, self.space, self.key, self.prune = (
            scratch, base, space, key, prune)

    def __call__(self, trial: Any) -> float:
        import optuna

        from unirec.train import fit

        params = {name: p.suggest(trial) for name, p in self.space.items()}
        # trials score retrieval's validation epochs: the ranking stage (trained after the
        # last epoch) would only add time; the tuned config keeps the base's rank settings
        rank = {**self.base.train.rank.model_dump(), "enabled": False}
        cfg = self.base.model_copy(update={"train": TrainConfig.model_validate(
            # a trial is judged on validation: no refit on it (the chosen config keeps the
            # base's train.refit), and no ranking stage
            {**self.base.train.model_dump(), **params, "refit": False, "rank": rank})})
        best = {"value": -math.inf, "epoch": 0, "epochs": 0}
        started = time.perf_counter()

        def on_epoch(row: dict[str, Any]) -> None:
            if self.key not in row:
                have = sorted(k[4:] for k in row if k.startswith("val_"))
                raise ConfigError(f"--metric {self.key[4:]}: fit reports no such validation "
                                  f"metric; it has: {', '.join(have)}")
            value = float(row[self.key])
            best["epochs"] = row["epoch"]
            if value > best["value"]:
                best.update(value=value, epoch=row["epoch"])
            trial.set_user_attr("epochs", row["epoch"])
            trial.set_user_attr("best_epoch", best["epoch"])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            trial.report(value, row["epoch"])
            if self.prune and trial.should_prune():
                raise optuna.TrialPruned()
            if row["epoch"] >= cfg.train.epochs:
                raise _LastEpoch  # fit ends here anyway: skip writing a model nobody reads

        with contextlib.suppress(_LastEpoch):
            fit(self.scratch, cfg, progress=False, on_epoch=on_epoch)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        return float(best["value"])


class _Progress:
    """After each trial: the tqdm bar, and the best config file when the trial is the best."""

    def __init__(self, trials: int | None, progress: bool | None, base: Config, out: Path,
                 result: TuneResult) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=trials, desc="tune", unit=" trial",
                        disable=None if progress is None else not progress)
        self.base, self.out, self.result = base, out, result

    def __call__(self, study: Any, trial: Any) -> None:
        self.bar.update(1)
        try:
            best = study.best_trial
        except ValueError:  # no trial completed yet
            return
        if best.number == trial.number:
            self.result.best = {"trial": best.number, "value": best.value,
                                "params": dict(best.params)}
            write_config(self.out, self.base.train, best.params,
                         f"unirec tune: trial {best.number}, validation "
                         f"{self.result.metric} = {best.value:.5f}")
            self.result.config_path = self.out
        self.bar.set_postfix({self.result.metric: f"{best.value:.4f}",
                              "best": f"#{best.number}"})

    def close(self) -> None:
        self.bar.close()


def trials_frame(study: Any, space: dict[str, Param], metric: str,
                 interrupted: bool) -> pl.DataFrame:
    """One row per trial: state, objective, epochs, seconds and each searched setting."""
    rows = []
    last = len(study.trials) - 1
    for t in study.trials:
        state = t.state.name
        if interrupted and t.number == last and state in ("FAIL", "RUNNING"):
            state = "INTERRUPTED"
        value = t.value if t.value is not None else (
            max(t.intermediate_values.values()) if t.intermediate_values else None)
        rows.append({"trial": t.number, "state": state, "metric": metric, "value": value,
                     "best_epoch": t.user_attrs.get("best_epoch"),
                     "epochs": t.user_attrs.get("epochs"),
                     "seconds": t.user_attrs.get("seconds"), "is_base": t.number == 0,
                     **{name: t.params.get(name) for name in space}})
    schema = {"trial": pl.Int64, "state": pl.String, "metric": pl.String,
              "value": pl.Float64, "best_epoch": pl.Int64, "epochs": pl.Int64,
              "seconds": pl.Float64, "is_base": pl.Boolean}
    return pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)


def write_table(store: Path, name: str, frame: pl.DataFrame) -> None:
    """Replace table ``name`` in the store's DuckDB, as ``fit`` writes its embedding tables."""
    con = connect_for_write(Path(store) / DB_FILE)
    try:
        con.register("_frame", frame.to_arrow())
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _frame")
    finally:
        con.close()


def write_config(path: Path, base: TrainConfig, params: dict[str, Any], title: str) -> None:
    """The ``train`` section ``unirec fit --config`` takes: the base config's own settings
    and the tuned ones (TOML, or JSON for a ``.json`` path), written atomically."""
    settings = {**base.model_dump(mode="json", exclude_defaults=True), **params}
    settings = {k: v for k, v in sorted(settings.items()) if v is not None}
    if path.suffix == ".json":
        text = json.dumps({"train": settings}, indent=1) + "\n"
    else:
        body = "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
        text = f"# {title}\n# apply with: unirec fit --config {path}\n[train]\n{body}"
    write_file(path, lambda tmp: tmp.write_text(text))


def _toml(value: Any) -> str:
    """A TOML value: JSON's scalars and arrays are TOML too; objects become inline tables."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _scratch_copy(src: Path, dst: Path) -> Path:
    """A store for the trials: files hard-linked (copied where links fail), the DuckDB file
    copied since ``fit`` writes into it, and no model."""
    shutil.copytree(src, dst, copy_function=link_or_copy, ignore=shutil.ignore_patterns("model"))
    (dst / DB_FILE).unlink()
    shutil.copy2(src / DB_FILE, dst / DB_FILE)
    return dst


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
