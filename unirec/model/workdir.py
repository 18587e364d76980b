"""Where fit writes while it trains, and how the model reaches ``store/model``: whole, or not.

Training state (checkpoint, best weights, metrics) lives in ``store/.model.training`` while
fit runs, so the model being served (``store/model``) is never touched by a running fit: a
fit that fails or is killed leaves the previous model as it was, and ``fit --resume``
continues from the training folder. At the end the new model folder is assembled beside
``store/model`` and swapped in by the store's own atomic swap (``store.atomic``), so a
reader sees the old model or the new one, never a mix, never none. A fit whose store was
featurized again meanwhile is refused before the swap.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unirec.errors import StoreError
from unirec.model.checkpoint import MANIFEST, load_checkpoint
from unirec.model.folder import store_identity
from unirec.store import Store
from unirec.store.atomic import building, link_or_copy

WORK = ".model.training"
CHECKPOINT = "checkpoint"
# what a finished model folder keeps of its training, so `fit --resume` can go on from it
CARRIED = ("best.safetensors", "metrics.jsonl", f"{CHECKPOINT}/checkpoint.safetensors",
           f"{CHECKPOINT}/{MANIFEST}")


# settings a resumed fit may change: how long and where it trains, and what runs after the
# retrieval checkpoint (the refit pass, the ranking stage), which the checkpoint does not hold
_MAY_CHANGE = ("epochs", "patience", "device", "compile", "precision", "refit", "rank")


def work_dir(store: Store) -> Path:
    return store.path / WORK


def start(store: Store, model: torch.nn.Module, opt: torch.optim.Optimizer, *, resume: bool,
          rank: int, train: dict[str, Any]) -> dict[str, Any] | None:
    """Prepare the training folder; with ``resume``, restore the latest checkpoint (of an
    interrupted fit, else of the finished model) and return its state, else None."""
    work, model_dir = work_dir(store), store.path / "model"
    if resume and not (work / CHECKPOINT / MANIFEST).is_file() and \
            (model_dir / CHECKPOINT / MANIFEST).is_file():
        if rank == 0:
            shutil.rmtree(work, ignore_errors=True)
            _link_files(model_dir, work)
        work = model_dir if rank else work
    if resume and (work / CHECKPOINT / MANIFEST).is_file():
        return _load(work / CHECKPOINT, model, opt, train)
    if rank == 0:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    return None


def _load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
          train: dict[str, Any]) -> dict[str, Any]:
    """``load_checkpoint`` with its failures as one line saying what to do."""
    try:
        state = load_checkpoint(ckpt, model, opt)
    except Exception as exc:  # safetensors, JSON, shape mismatch: all mean "cannot resume"
        saved = {}
        with contextlib.suppress(Exception):
            import json

            saved = json.loads((ckpt / MANIFEST).read_text())["extra"].get("train", {})
        changed = [f"train.{k} {saved[k]!r} -> {v!r}" for k, v in train.items()
                   if k in saved and saved[k] != v and k not in _MAY_CHANGE]
        why = f"the config changed ({', '.join(changed)})" if changed else \
            f"it is damaged ({_first_line(exc)})"
        raise StoreError(f"cannot resume from the checkpoint in {str(ckpt)!r}: {why}; run "
                         "`unirec fit` without --resume to start over") from None
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _link_files(src: Path, dst: Path) -> None:
    """Hard-link the training files of ``src`` into ``dst``: the source keeps every byte
    until the swap has happened. Files replaced by rename (weights, checkpoint) can share an
    inode; ``metrics.jsonl`` is appended to, so it is copied (as is anything links fail on)."""
    for name in CARRIED:
        if (src / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".jsonl"):  # appended to: a copy
                shutil.copy2(src / name, dst / name)
            else:
                link_or_copy(src / name, dst / name)


@contextlib.contextmanager
def publish(store: Store, manifest: dict[str, Any]) -> Iterator[Path]:
    """Yield an empty folder for the finished model; on clean exit it becomes
    ``store/model`` in one swap, carrying the training files, and the training folder goes.

    Refused (``StoreError``, old model kept) when ``store`` no longer holds the data the
    model was trained on (``manifest``): it was featurized again during the fit.
    """
    with building(store.path / "model") as out:
        yield out
        _link_files(work_dir(store), out)
        try:
            now = Store(store.path).manifest
        except (StoreError, OSError, ValueError):
            now = None
        if now is None or store_identity(now) != store_identity(manifest):
            raise StoreError(f"the store {str(store.path)!r} was featurized again while fit "
                             "ran: this model is refused (not served); run `unirec fit` again")
    shutil.rmtree(work_dir(store), ignore_errors=True)
