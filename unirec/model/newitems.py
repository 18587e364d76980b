"""New items' vectors predicted from content on the warm items' scale (``train.new_item_map``).

Why: an item without training interactions has no id embedding, so the item tower gives it
its content-only vector ``c`` (the tower with the id token zeroed). That vector is trained
(``train.content_loss``) to rank items on its own, but it is not the vector a warm item with
the same content ends up with: the id token moves every warm item (towards its audience, and
by how popular it is), and new items never get that move. After training, a ridge
regression fitted on the warm items predicts each one's served vector from its content-only
vector, ``v ~ [c, 1] @ M``, shrunk towards ``M = [I; b]`` (the content vector moved by the
warm items' mean offset ``b``, the intercept, never shrunk) by a strength the warm items'
leave-one-out error picks; a new item is served
``scale * normalize([c, 1] @ M)``: where a
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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unirec.model import affinity
from unirec.model.towers import TwoTower, affine

FILE = "new_items.safetensors"


SHRINK_GRID = tuple(10.0 ** e for e in range(-3, 5))
"""Ridge strengths tried, as multiples of the mean diagonal of ``X'X``."""
SELECT_ITEMS = 50_000  # warm items (a seeded sample) that choose the ridge strength


@torch.no_grad()
def fit_new_item_map(model: TwoTower, scale: float, ridge: float | None = None,
                     chunk: int = 8192) -> float | None:
    """Fit ``M`` on the trained items of ``model``, install it in the item tower (with
    ``scale``) and return the ridge strength used. None (nothing installed) when the tower
    has no id embedding, no content features, or fewer trained items than the map has rows.

    The map is shrunk towards ``M = [I; b]`` (the content-only vector, what a new item gets
    without a map, moved by the warm items' mean offset), not towards zero: with few warm
    items per map entry, a map shrunk towards zero puts every new item near the warm items'
    mean vector (synthetic generator, 2-epoch fit: 13 of 2,000 top-10 slots for 20% of the
    items; 436 with this prior). ``ridge`` None picks the strength from ``SHRINK_GRID`` by
    the exact leave-one-out error of ridge regression on the warm items (a seeded sample of
    at most ``SELECT_ITEMS``), so the data decide how far to move from it."""
    tower = model.item
    if tower.ids is None or not len(tower.encoders):
        return None
    was = model.training
    model.eval()
    tower.set_new_item_map(None, 1.0)
    trained = torch.nonzero(tower.ids.trained > 0).squeeze(1)
    trained = trained[trained > 0]
    dim = model.item_table.embedding_dim
    if len(trained) <= dim + 1:
        model.train(was)
        return None
    prior = torch.zeros(dim + 1, dim, dtype=torch.float64, device=trained.device)
    prior[:dim] = torch.eye(dim, dtype=torch.float64, device=trained.device)
    shrink = torch.eye(dim + 1, dtype=torch.float64, device=trained.device)
    shrink[-1, -1] = 0.0  # the intercept is not shrunk
    x = y = None
    if len(trained) <= SELECT_ITEMS:  # one pass of the tower gives the fit and the choice
        x, y = _design(tower, trained, chunk)
        xtx, xty = x.T @ x, x.T @ y
    else:
        xtx, xty = _normal_equations(tower, trained, chunk)
    if ridge is None:
        if x is None:
            g = torch.Generator().manual_seed(0)
            pick = trained[torch.randperm(len(trained), generator=g)[:SELECT_ITEMS]
                           .to(trained.device)]
            x, y = _design(tower, pick, chunk)
        ridge = _loo_ridge(x, y, prior, shrink)
    m = torch.linalg.solve(xtx + ridge * shrink, xty + ridge * shrink @ prior)
    tower.set_new_item_map(m.to(model.item_table.weight.dtype), scale)
    model.train(was)
    return float(ridge)


def _design(tower: torch.nn.Module, idx: torch.Tensor, chunk: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[c, 1]`` (content-only vectors) and ``v`` (served vectors) of items ``idx``."""
    xs, ys = [], []
    for s in range(0, len(idx), chunk):
        rows, sub = tower.gather(idx[s:s + chunk]), idx[s:s + chunk]
        # vectors, not encode: the map is fitted in the towers' own width (no affinity)
        xs.append(affine(tower.vectors(tower.tokens(rows, None))).double())
        ys.append(tower.vectors(tower.tokens(rows, sub), sub).double())
    return torch.cat(xs), torch.cat(ys)


def _normal_equations(tower: torch.nn.Module, idx: torch.Tensor, chunk: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``X'X`` and ``X'Y`` over items ``idx``, a chunk at a time (any catalogue size)."""
    xtx = xty = None
    for s in range(0, len(idx), chunk):
        x, y = _design(tower, idx[s:s + chunk], chunk)
        xtx = x.T @ x if xtx is None else xtx + x.T @ x
        xty = x.T @ y if xty is None else xty + x.T @ y
    return xtx, xty


def _loo_ridge(x: torch.Tensor, y: torch.Tensor, prior: torch.Tensor,
               shrink: torch.Tensor) -> float:
    """The strength in ``SHRINK_GRID`` (times the mean diagonal of ``X'X``) whose ridge map,
    shrunk towards ``prior``, predicts each item's served vector best when that item is
    left out: residual ``r_i / (1 - h_i)``, ``h_i`` the item's leverage."""
    xtx = x.T @ x
    base = float(xtx.diagonal()[:-1].mean())
    best, best_err = 0.0, float("inf")
    for t in SHRINK_GRID:
        a = xtx + t * base * shrink
        m = torch.linalg.solve(a, x.T @ y + t * base * shrink @ prior)
        lev = (x * torch.linalg.solve(a, x.T).T).sum(1)
        err = float((((y - x @ m) / (1 - lev).clamp(min=1e-6).unsqueeze(1)) ** 2).sum())
        if err < best_err:
            best, best_err = t * base, err
    return best


def save_new_item_map(model: TwoTower, folder: Path) -> None:
    """``folder/new_items.safetensors`` with what is installed: the map, the affinity."""
    tower, out, meta = model.item, {}, {}
    if tower.new_map.numel():
        out.update({"map": tower.new_map.detach().cpu().contiguous(),
                    "scale": torch.tensor([tower.new_scale])})
    if tower.affinity is not None:
        tensors, meta = affinity.saved(tower.affinity)
        out.update(tensors)
    if out:
        save_file(out, str(folder / FILE), metadata=meta or None)


def load_new_item_map(model: TwoTower, folder: Path) -> None:
    """Install ``folder/new_items.safetensors`` when fit wrote one (older models: none)."""
    path = folder / FILE
    if not path.is_file():
        return
    t = load_file(str(path), device=str(model.item_table.weight.device))
    if "map" in t:
        model.item.set_new_item_map(t["map"], float(t["scale"][0]))
    with safe_open(str(path), "pt") as f:
        affinity.restore(model, t, f.metadata() or {})
