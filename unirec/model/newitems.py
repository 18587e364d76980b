"""New items' vectors predicted from content on the warm items' scale (``train.new_item_map``).

Why: an item without training interactions has no id embedding, so the item tower gives it
its content-only vector ``c`` (the tower with the id token zeroed). That vector is trained
(``train.content_loss``) to rank items on its own, but it is not the vector a warm item with
the same content ends up with: the id token moves every warm item (towards its audience, and
by how popular it is), and new items never get that move. After training, a ridge
regression fitted on the warm items predicts each one's served vector from its content-only
vector, ``v ~ [c, 1] @ M``; a new item is served ``scale * normalize([c, 1] @ M)``: where a
warm item with that content would sit, with a length (warm items: 1) that discounts a guess
from content against an item's own trained id. MovieLens-100K tuning carve (docs/quality.md
section 13): items never seen rank better among themselves (new-only Recall@10 0.117 ->
0.132) and at a given share of new items in the top 10, mixed NDCG@10 is ~0.008 higher.

The map is fitted once, after the kept weights are loaded (training never sees it), saved as
``model/new_items.safetensors`` and applied by the item tower to rows without a trained id
and to new item records (``unirec.serve.cold``), so the served files, the rebuilt towers and
the cold-start path agree.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unirec.model.towers import TwoTower, affine

FILE = "new_items.safetensors"


@torch.no_grad()
def fit_new_item_map(model: TwoTower, scale: float, ridge: float = 1.0,
                     chunk: int = 8192) -> bool:
    """Fit ``M`` on the trained items of ``model`` and install it in the item tower (with
    ``scale``). False (nothing installed) when the tower has no id embedding, no content
    features, or fewer trained items than the map has rows."""
    tower = model.item
    if tower.ids is None or not len(tower.encoders):
        return False
    was = model.training
    model.eval()
    tower.set_new_item_map(None, 1.0)
    trained = torch.nonzero(tower.ids.trained > 0).squeeze(1)
    trained = trained[trained > 0]
    dim = model.item_table.embedding_dim
    if len(trained) <= dim + 1:
        model.train(was)
        return False
    xtx = torch.zeros(dim + 1, dim + 1, dtype=torch.float64, device=trained.device)
    xty = torch.zeros(dim + 1, dim, dtype=torch.float64, device=trained.device)
    for s in range(0, len(trained), chunk):  # normal equations, a chunk of items at a time
        idx = trained[s:s + chunk]
        rows = tower.gather(idx)
        x = affine(tower.encode(rows, None)).double()
        y = tower.encode(rows, idx).double()
        xtx += x.T @ x
        xty += x.T @ y
    eye = torch.eye(dim + 1, dtype=torch.float64, device=xtx.device)
    eye[-1, -1] = 0.0  # the intercept is not shrunk
    m = torch.linalg.solve(xtx + ridge * eye, xty).to(model.item_table.weight.dtype)
    tower.set_new_item_map(m, scale)
    model.train(was)
    return True


def save_new_item_map(model: TwoTower, folder: Path) -> None:
    """``folder/new_items.safetensors`` when the item tower has a map installed."""
    tower = model.item
    if tower.new_map.numel():
        save_file({"map": tower.new_map.detach().cpu().contiguous(),
                   "scale": torch.tensor([tower.new_scale])}, str(folder / FILE))


def load_new_item_map(model: TwoTower, folder: Path) -> None:
    """Install ``folder/new_items.safetensors`` when fit wrote one (older models: none)."""
    path = folder / FILE
    if path.is_file():
        t = load_file(str(path), device=str(model.item_table.weight.device))
        model.item.set_new_item_map(t["map"], float(t["scale"][0]))
