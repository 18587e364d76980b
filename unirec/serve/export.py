"""Export the trained towers (and the ranking stage, when the model has one) as ONNX, for
serving stacks that run no Python or no torch.

Each tower becomes one graph from its compiled feature columns (the rows of
``tensors/{users,items}.safetensors``, i.e. what ``featurize`` or
``unirec.serve.records`` produce) plus the entity ``index`` (0 = a new entity: the id
embedding is skipped, as for cold start) and, for users, ``history`` (item indices, most
recent last, left-padded with 0), to the tower's unit vector. The batch dimension is
dynamic. The frozen text/image tables are constants inside the graphs (their feature
columns are row indices into them), as is the item-id table the history reads.

``towers.json`` beside the graphs lists every input's name, dtype and shape.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript tracer: under a second
per tower, outputs equal to torch's to ~1e-7. torch 2.14's default (``dynamo=True``) was
tried: ``torch.export`` needs its non-strict fallback on these towers, takes ~14 s per tower
on CPU, and its graph failed to load in onnxruntime ("duplicate definition of name
embedding"); the tracer is the reliable path for these plain tensor programs.
The opset is pinned so runtimes know what to expect. The tracer drops inputs a tower never
reads (e.g. the ``.length`` column of a multi-valued categorical): ``towers.json`` lists the
graph's actual inputs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unirec.errors import MissingExtraError
from unirec.model.interactions import RankNet
from unirec.model.ranker import Ranker
from unirec.model.restore import load_model
from unirec.model.towers import Tower

OPSET = 18
FORMAT = "unirec-onnx/1"


class TowerGraph(nn.Module):
    """A tower as a function of positional tensors: columns, then index, then history."""

    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower
        self.columns = list(tower.columns)
        self.has_index = tower.ids is not None
        self.has_history = tower.history is not None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        rows = dict(zip(self.columns, inputs[: len(self.columns)], strict=True))
        rest = list(inputs[len(self.columns):])
        idx = rest.pop(0) if self.has_index else None
        history = rest.pop(0) if self.has_history else None
        return self.tower.encode(rows, idx, history)


def tower_inputs(tower: Tower, history_length: int) -> list[dict[str, Any]]:
    """Name, dtype, shape and meaning of each graph input, in order."""
    out = []
    for col in tower.columns:
        buf = tower.gather(torch.zeros(1, dtype=torch.long))[col]
        out.append({"name": col, "dtype": str(buf.dtype).removeprefix("torch."),
                    "shape": ["batch", *buf.shape[1:]],
                    "meaning": f"compiled feature column (tensors/{tower.side}s.safetensors)"})
    if tower.ids is not None:
        out.append({"name": "index", "dtype": "int64", "shape": ["batch"],
                    "meaning": f"{tower.side} index ({tower.side}_map); 0 = a new {tower.side} "
                               "(no id embedding)"})
    if tower.history is not None:
        out.append({"name": "history", "dtype": "int64", "shape": ["batch", history_length],
                    "meaning": "item indices, most recent last, left-padded with 0"})
    return out


def example_inputs(tower: Tower, idx: torch.Tensor, history: torch.Tensor | None
                   ) -> tuple[torch.Tensor, ...]:
    """Real rows of entities ``idx`` in graph-input order (also what tests feed both)."""
    rows = tower.gather(idx)
    args = [rows[c] for c in tower.columns]
    if tower.ids is not None:
        args.append(idx)
    if tower.history is not None:
        args.append(history if history is not None else
                    torch.zeros(len(idx), tower.history.pos.shape[0], dtype=torch.long))
    return tuple(args)


def _export(graph: TowerGraph, args: tuple[torch.Tensor, ...], names: list[str],
            path: Path) -> None:
    axes = {name: {0: "batch"} for name in names}
    axes["embedding"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about deprecation and constants
        torch.onnx.export(graph, args, str(path), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)


@torch.no_grad()
def export_onnx(store: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out/user_tower.onnx``, ``out/item_tower.onnx`` and ``out/towers.json``.

    Returns the ``towers.json`` content.
    """
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("ONNX export needs the onnx extra: pip install "
                                "'unirec[onnx]'") from None
    model = load_model(store)
    length = int(model.user.history.pos.shape[0]) if model.user.history is not None else 0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"format": FORMAT, "exporter": "torch.onnx.export (TorchScript)",
                            "opset": OPSET, "dim": model.served_dim, "towers": {}}
    if model.item.affinity is not None:
        spec["affinity_columns"] = {
            "first": int(model.item_table.embedding_dim), "count": model.item.affinity.width,
            "fields": [name for name, _ in model.item.affinity.fields],
            "meaning": "the category affinity's columns (unirec.model.affinity), inside the "
                       "graphs: the served vectors are the unit vector then these"}
    for side, tower in (("user", model.user), ("item", model.item)):
        idx = torch.tensor([1, 0])  # any entity, and the padding row: traced once
        hist = torch.zeros(len(idx), length, dtype=torch.long) if length else None
        inputs = tower_inputs(tower, length)
        file = f"{side}_tower.onnx"
        _export(TowerGraph(tower).eval(), example_inputs(tower, idx, hist),
                [i["name"] for i in inputs], out / file)
        used = {i.name for i in onnx.load(str(out / file)).graph.input}
        spec["towers"][side] = {"file": file, "inputs": [i for i in inputs if i["name"] in used],
                                "output": {"name": "embedding", "dtype": "float32",
                                           "shape": ["batch", spec["dim"]],
                                           "meaning": "the L2-normalised vector (then "
                                           "the affinity's columns, if any); score = dot"}}
    ranker = Ranker.load(Path(store) / "model")
    if ranker is not None:
        spec["ranker"] = _export_ranker(ranker, out)
    (out / "towers.json").write_text(json.dumps(spec, indent=1) + "\n")
    return spec


class RankGraph(nn.Module):
    """The ranking stage after its per-entity parts: (user_part, item_part, u, v, score) ->
    each head's output, in ``names`` order."""

    def __init__(self, net: RankNet) -> None:
        super().__init__()
        self.net = net
        self.names = list(net.heads)

    def forward(self, user_part: torch.Tensor, item_part: torch.Tensor, u: torch.Tensor,
                v: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(user_part, item_part, u, v, score)
        return tuple(out[name] for name in self.names)


def _export_ranker(ranker: Ranker, out: Path) -> dict[str, Any]:
    """``ranker.onnx``: the graph from precomputed parts (``model/rank/user_part.npy``,
    ``item_part.npy``, rows by entity index) and the retrieval vectors and scores."""
    from unirec.config import RankConfig

    meta = ranker.meta
    tu, h = ranker.user_part.shape[1:]
    ti = ranker.item_part.shape[1]
    d = ranker.w["pair.weight"].shape[1] - 1
    net = RankNet(tu, ti, d, RankConfig(**meta["config"]), len(meta["type_names"]))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in ranker.w.items()})
    graph = RankGraph(net).eval()
    b, c = 2, 3
    args = (torch.zeros(b, tu, h), torch.zeros(b, c, ti, h), torch.zeros(b, d),
            torch.zeros(b, c, d), torch.zeros(b, c))
    names = ["user_part", "item_part", "u", "v", "score"]
    axes = {n: {0: "batch"} for n in names}
    for n in ("item_part", "v", "score", *graph.names):
        axes[n] = {0: "batch", 1: "candidates"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(out / "ranker.onnx"), input_names=names,
                          output_names=graph.names, dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)
    return {"file": "ranker.onnx", "model": meta["model"], "inputs": [
        {"name": "user_part", "shape": ["batch", tu, h],
         "meaning": "model/rank/user_part.npy rows of the users"},
        {"name": "item_part", "shape": ["batch", "candidates", ti, h],
         "meaning": "model/rank/item_part.npy rows of the candidates"},
        {"name": "u", "shape": ["batch", d],
         "meaning": "the users' retrieval vectors (their first d columns)"},
        {"name": "v", "shape": ["batch", "candidates", d],
         "meaning": "the candidates' retrieval vectors (their first d columns)"},
        {"name": "score", "shape": ["batch", "candidates"],
         "meaning": "the retrieval score: the dot product of the whole served vectors"}],
        "outputs": graph.names, "blend": meta["config"]["blend"],
        "meaning": "the served score is 'rank' plus the blend terms (rank.json's stats)",
        "new_items": meta["config"].get("new_items", "retrieval"),
        "new_items_meaning": "candidates that model/rank/item_trained.npy marks False "
        "(new items) are placed by retrieval: 'retrieval': each keeps its retrieval slot and "
        "the others fill the remaining slots by score; 'last': the same top k, with the new "
        "items after the others in retrieval order; 'ranker': by score like the others",
        "active": bool(meta["active"]), **_rescore_spec(ranker)}


def _rescore_spec(ranker: Ranker) -> dict[str, Any]:
    """How a deployment reproduces ``train.rank.rescore`` (no graph: two dot products)."""
    if ranker.rescore_user is None:
        return {}
    return {"rescore": {
        "active": ranker.rescore_on(False), "weight": ranker.rescore["weight"],
        "user": "model/rank/rescore_user.npy", "item": "model/rank/rescore_item.npy",
        "meaning": "for a known user's candidates: s = the score above where 'active', "
        "else u . v; r = rescore_user[user] . rescore_item[candidate]; served score "
        "(1 - weight) z(s) + weight z(r), z standardising over the user's candidates; "
        "new items are placed as above"}}
