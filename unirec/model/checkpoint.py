"""Training checkpoints and final weights, without pickle.

A checkpoint must let ``fit --resume`` continue bit-identically, yet loading one must never
run code from the file: tensors go to safetensors, everything else (optimizer
hyper-parameters, epoch, best metric, RNG states) to JSON. Nothing here calls ``torch.load``.

Layout of a checkpoint folder:

- ``checkpoint.safetensors``: ``model.<name>`` (parameters and buffers),
  ``optim.<param_index>.<name>`` (per-parameter optimizer state; scalars such as ``step`` as
  0-d tensors), ``rng.torch`` and ``rng.cuda.<device>`` (torch generator states).
- ``checkpoint.json``: format version, optimizer ``param_groups`` (parameter indices, not
  tensors), the state entries to rebuild, python/numpy RNG states, the caller's ``extra``,
  and a ``checkpoint_id`` also stored in the safetensors metadata.

Each file is written to a temporary name and ``os.replace``-d into place
(``unirec.store.atomic.write_file``), the JSON last: it is the commit marker, and a load
refuses a safetensors file whose id differs from the JSON's (a crash between the two
renames).
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model

from unirec.store.atomic import write_file

FORMAT = "unirec-checkpoint/1"
TENSORS = "checkpoint.safetensors"
MANIFEST = "checkpoint.json"


def _encode(value: Any) -> Any:
    """JSON form of optimizer hyper-parameters and RNG states, keeping tuples and tensors."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global RNG a training step may draw from: torch (CPU, CUDA), numpy, python."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors, {"numpy": np.random.get_state(legacy=False), "python": random.getstate()}


def _set_rng_state(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n_cuda = sum(k.startswith("rng.cuda.") for k in tensors)
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(n_cuda)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np.random.set_state(states["numpy"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict
) -> None:
    """Save model, optimizer and RNG states so a resumed run continues bit-identically.

    ``extra`` (epoch, best metric, scheduler state, ...) must be JSON-serializable (tuples,
    numpy scalars/arrays and tensors are converted and restored). Each file is replaced
    atomically: a crash mid-save leaves the previous checkpoint, or (between the two
    renames) a pair :func:`load_checkpoint` refuses; never a silently mixed one.
    """
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    # Clones: safetensors refuses tensors sharing storage (tied weights, views).
    tensors = {f"model.{k}": v.detach().to("cpu", copy=True).contiguous()
               for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    entries: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for name, value in state.items():
            key = f"optim.{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
                entries[key] = {"kind": "tensor", "dtype": str(value.dtype)}
            else:
                entries[key] = {"kind": "value", "value": _encode(value)}
    rng_tensors, rng_states = _rng_state()
    tensors.update(rng_tensors)
    checkpoint_id = uuid.uuid4().hex
    manifest = {
        "format": FORMAT,
        "checkpoint_id": checkpoint_id,
        "param_groups": _encode(opt["param_groups"]),
        "optimizer_state": entries,
        "rng": _encode(rng_states),
        "extra": _encode(extra),
    }
    text = json.dumps(manifest, indent=1, allow_nan=True)
    write_file(path_dir / TENSORS, lambda p: save_file(
        tensors, str(p), metadata={"checkpoint_id": checkpoint_id}), durable=True)
    write_file(path_dir / MANIFEST, lambda p: p.write_text(text), durable=True)


def load_checkpoint(
    path_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    restore_rng: bool = True,
) -> dict:
    """Restore a :func:`save_checkpoint` folder into ``model`` and ``optimizer``; return extra.

    ``model`` and ``optimizer`` must be built as for the saved run (same parameters, same
    groups). RNG states are restored too unless ``restore_rng`` is False.
    """
    path_dir = Path(path_dir)
    manifest_path, tensors_path = path_dir / MANIFEST, path_dir / TENSORS
    if not manifest_path.is_file() or not tensors_path.is_file():
        raise FileNotFoundError(f"no complete checkpoint in {path_dir}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: unknown checkpoint format {manifest.get('format')!r}")
    with safe_open(str(tensors_path), framework="pt", device="cpu") as f:
        if (f.metadata() or {}).get("checkpoint_id") != manifest["checkpoint_id"]:
            raise ValueError(f"{path_dir}: {TENSORS} does not belong to {MANIFEST} "
                             "(interrupted save?)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, entry in manifest["optimizer_state"].items():
        _, index, name = key.split(".", 2)
        value = tensors[key] if entry["kind"] == "tensor" else _decode(entry["value"])
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state,
                               "param_groups": _decode(manifest["param_groups"])})
    if restore_rng:
        _set_rng_state(tensors, _decode(manifest["rng"]))
    return _decode(manifest["extra"])


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str]) -> None:
    """Write the final model as safetensors (tied weights stored once), atomically.

    ``metadata`` (string to string, e.g. unirec version, config hash) lands in the header,
    readable without loading any tensor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda p: save_model(model, str(p), metadata=dict(metadata),
                                         force_contiguous=True), durable=True)


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, str]:
    """Load :func:`save_weights` output into ``model`` (strict); return its metadata.

    The metadata excludes the entries safetensors adds to record tied tensors
    (``"out.weight": "emb.weight"``), so callers get back what they saved.
    """
    path = Path(path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    load_model(model, str(path), strict=True, device=str(device))
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
    names = model.state_dict().keys()
    return {k: v for k, v in metadata.items() if k not in names}


def load_grown_weights(path: Path, model: torch.nn.Module) -> dict[str, int]:
    """Load :func:`save_weights` output into ``model``, whose tables may have grown since
    (``featurize --append`` adds users, items and categorical values at the end): equal
    shapes load whole; a weight with more rows than saved gets the saved rows and zeros
    after them (unknown until trained). Returns the rows added per weight. Raises
    ``ValueError`` naming a weight that is missing or whose shape is not such a growth.
    """
    with safe_open(str(path), framework="pt", device="cpu") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
        aliases = f.metadata() or {}  # tied weights: name -> the name stored
    grown: dict[str, int] = {}
    with torch.no_grad():
        for name, param in model.state_dict().items():
            old = saved.get(name, saved.get(aliases.get(name, ""), None))
            if old is None:
                raise ValueError(f"the saved model has no weight {name}")
            if old.shape == param.shape:
                param.copy_(old)
                continue
            if old.dim() != param.dim() or old.shape[1:] != param.shape[1:] or \
                    old.shape[0] > param.shape[0]:
                raise ValueError(f"its weight {name} is {tuple(old.shape)} and the store now "
                                 f"needs {tuple(param.shape)}, not an extension")
            param[: old.shape[0]].copy_(old)
            param[old.shape[0]:].zero_()
            grown[name] = int(param.shape[0] - old.shape[0])
    return grown
