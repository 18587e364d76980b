"""One encoder per feature kind, looked up by the op that compiled the feature.

Every encoder turns its feature's columns (gathered rows of the entity tensors) into one
token of width ``dim``. Built-ins register with ``@ENCODERS.register(op)`` exactly as a
plugin does; plugins may also arrive through the ``unirec.encoders`` entry-point group, or
``unirec.add_encoder(op, factory)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unirec.registry import Registry

ENCODERS: Registry[type] = Registry("encoder", entry_point_group="unirec.encoders")

Rows = dict[str, torch.Tensor]


class Shared(nn.Module):
    """What several encoders read: frozen embedding tables and the item-id table."""

    def __init__(self, text: torch.Tensor | None, image: torch.Tensor | None,
                 item_table: nn.Embedding, projection: str = "trained") -> None:
        super().__init__()
        self.projection = projection  # how text/image projections start (content_projection)
        # frozen vectors live on the device once; they are data, not weights
        self.register_buffer("text", text if text is not None else torch.zeros(1, 1),
                             persistent=False)
        self.register_buffer("image", image if image is not None else torch.zeros(1, 1),
                             persistent=False)
        self.item_table = item_table


class Encoder(nn.Module):
    """Base: ``feature`` is the manifest entry (name, op, params, outputs, vocab_size)."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__()
        self.name = feature["name"]
        self.feature = feature
        self.columns = [o["column"] for o in feature["outputs"]]

    def forward(self, rows: Rows) -> torch.Tensor:  # (B, dim)
        raise NotImplementedError


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of (B, L, d) where mask (B, L) is True; zeros when nothing is."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def bag_mean(idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``masked_mean(table[idx], idx > 0)`` in one fused op (``embedding_bag``): index 0 is
    padding and is left out of the count; a row of padding only gives zeros. The ONNX
    exporter has no ``embedding_bag`` with ``padding_idx``, so an export traces the plain
    gather + masked mean (the same numbers)."""
    if torch.onnx.is_in_onnx_export():
        return masked_mean(F.embedding(idx, table), idx > 0)
    return F.embedding_bag(idx, table, mode="mean", padding_idx=0)


@ENCODERS.register("categorify")
class CategoricalEncoder(Encoder):
    """An embedding per vocabulary index (0 = OOV/missing = zero); multi-valued: mean."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.table = nn.Embedding(feature["vocab_size"], dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.05)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, rows: Rows) -> torch.Tensor:
        idx = rows[self.name].long()  # (B,) or (B, max_len)
        if idx.dim() == 1:
            return self.table(idx)
        return bag_mean(idx, self.table.weight)


@ENCODERS.register("bucketize")
class BucketEncoder(CategoricalEncoder):
    """An embedding per quantile bucket (0 = missing = zero): any shape of effect."""


@ENCODERS.register("normalize")
class ContinuousEncoder(Encoder):
    """A projection of (value, missing flag)."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.proj = nn.Linear(2, dim)

    def forward(self, rows: Rows) -> torch.Tensor:
        x = torch.stack([rows[self.name], rows[f"{self.name}.missing"]], dim=-1).float()
        return self.proj(x)


def init_projection(proj: nn.Linear, table: torch.Tensor, mode: str,
                    sample: int = 100_000) -> None:
    """Start ``proj`` (frozen vectors -> dim) as the frozen table's principal components.

    Why: trained from random, the title projection learnt to tell warm items apart (an id in
    disguise) and kept less of what titles share than a random projection does (MovieLens:
    genre F1 0.05-0.07 against 0.087; 10-12% of each title's 10 nearest neighbours kept
    against 32%), which is exactly what a new item needs. PCA keeps the most variance a
    linear map of this width can; ``pca_frozen`` also stops training from bending it.
    The components are scaled so the token starts as large as the default init's. ``trained``
    leaves PyTorch's init. Rows of zeros (row 0, no text) are left out of the statistics.
    """
    if mode == "trained":
        return
    with torch.no_grad():
        x = table[table.abs().sum(1) > 0].double()
        if len(x) > sample:  # the covariance of a seeded sample is plenty
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:sample]]
        k = min(proj.out_features, proj.in_features)
        if len(x) >= 2:
            mean = x.mean(0)
            _, vecs = torch.linalg.eigh(torch.cov((x - mean).T))
            comp = vecs[:, -k:].flip(1).T  # (k, in), largest first
            z = (x - mean) @ comp.T
            # the default init's output size: E|Wx|^2 = out * |x|^2 / (3 * in)
            target = proj.out_features * (x * x).sum(1).mean() / (3 * proj.in_features)
            comp = comp * (target / (z * z).sum(1).mean().clamp(min=1e-12)).sqrt()
            proj.weight.zero_()
            proj.weight[:k] = comp.to(proj.weight.dtype)
            proj.bias.copy_(-(mean.to(proj.weight.dtype) @ proj.weight.T))
    if mode == "pca_frozen":
        proj.requires_grad_(False)


@ENCODERS.register("text_embedding")
class TextEncoder(Encoder):
    """A trained projection of the frozen sentence embedding (row 0 = no text = zeros)."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.shared = [shared]  # a list: not registered twice as a submodule
        self.proj = nn.Linear(shared.text.shape[1], dim)
        init_projection(self.proj, shared.text, shared.projection)

    def forward(self, rows: Rows) -> torch.Tensor:
        return self.proj(self.shared[0].text[rows[self.name].long()])


@ENCODERS.register("image_embedding")
class ImageEncoder(Encoder):
    """A trained projection of the frozen image features plus the missing flag."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.shared = [shared]
        self.proj = nn.Linear(shared.image.shape[1] + 1, dim)
        init_projection(self.proj, F.pad(shared.image, (0, 1)), shared.projection)

    def forward(self, rows: Rows) -> torch.Tensor:
        vec = self.shared[0].image[rows[self.name].long()]
        flag = rows[f"{self.name}.missing"].float().unsqueeze(-1)
        return self.proj(torch.cat([vec, flag], dim=-1))


@ENCODERS.register("id_sequence")
class IdSequenceEncoder(Encoder):
    """Mean of the shared item-id embeddings of the listed items, then a projection."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.shared = [shared]
        self.proj = nn.Linear(shared.item_table.embedding_dim, dim)

    def forward(self, rows: Rows) -> torch.Tensor:
        return self.proj(bag_mean(rows[self.name].long(), self.shared[0].item_table.weight))


@ENCODERS.register("float_sequence")
class FloatSequenceEncoder(Encoder):
    """A small MLP over the padded values and the relative length."""

    def __init__(self, feature: dict[str, Any], dim: int, shared: Shared) -> None:
        super().__init__(feature, dim, shared)
        self.max_len = feature["outputs"][0]["shape"][0]
        self.mlp = nn.Sequential(nn.Linear(self.max_len + 1, dim), nn.GELU(),
                                 nn.Linear(dim, dim))

    def forward(self, rows: Rows) -> torch.Tensor:
        length = rows[f"{self.name}.length"].float().unsqueeze(-1) / self.max_len
        return self.mlp(torch.cat([rows[self.name].float(), length], dim=-1))


class IdEncoder(nn.Module):
    """A free embedding per entity index, hidden for entities never seen in training
    (their row was never trained) and, with ``id_dropout``, for some training rows."""

    def __init__(self, table: nn.Embedding, trained: torch.Tensor, id_dropout: float) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("trained", trained.float(), persistent=False)  # (N+1,)
        self.id_dropout = id_dropout

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        keep = self.trained[idx]
        if self.training and self.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.id_dropout).float()
        return self.table(idx) * keep.unsqueeze(-1)


def _by_row(slots: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, L) ``slots`` grouped by table row: ``(order, offsets)``, ``order`` the flat
    slot positions sorted by row (stable, so sums are deterministic), ``offsets`` where each
    row's run starts. A table row's gradient is then one bag over its run."""
    # searchsorted, not bincount: static shapes, so torch.compile keeps one graph
    value, order = torch.sort(slots.flatten(), stable=True)
    return order, torch.searchsorted(value, torch.arange(rows, device=slots.device))


def _row_bags(by_row: tuple[torch.Tensor, torch.Tensor], width: int, source: torch.Tensor,
              weight: torch.Tensor) -> torch.Tensor:
    """(table rows, d): for each table row, the sum over the slots (b, l) that hold it of
    ``weight[b, l] * source[b]``: a table's gradient without ``index_add_`` or a dense
    (B, rows) matrix."""
    order, offsets = by_row
    return F.embedding_bag(order // width, source, offsets, mode="sum",
                           per_sample_weights=weight.flatten()[order])


class _SlotScores(torch.autograd.Function):
    """``scores[b, l] = table[slots[b, l]] · q[b]`` (B, L), with a backward in O(B·L·d).

    The forward may score the whole table with one GEMM and gather the slots (``gemm``: fast
    while the table has few rows per slot), but autograd would then pay that GEMM twice more
    and a dense (B, table rows) zero-fill in the backward. Only B·L entries have a gradient:
    ``dq[b] = sum_l g[b, l] table[slots[b, l]]`` is one weighted bag, and the table's
    gradient another, over the slots sorted by row (deterministic, unlike ``x[i]``'s
    backward; ``index_add_`` measured 1-8 ms against ~1.5 for the sorted bag).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, table: torch.Tensor, slots: torch.Tensor, gemm: bool,
                order: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, table, slots, order, offsets)
        if gemm:
            return (q @ table.T).gather(1, slots)
        return torch.bmm(F.embedding(slots, table), q.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, table, slots, order, offsets = ctx.saved_tensors
        grad = grad.to(table.dtype)
        dq = F.embedding_bag(slots, table, mode="sum", per_sample_weights=grad)
        dtable = _row_bags((order, offsets), slots.shape[1], q.to(table.dtype), grad)
        return dq.to(q.dtype), dtable, None, None, None, None


class _WeightedBag(torch.autograd.Function):
    """``out[b] = sum_l weights[b, l] table[slots[b, l]]`` (``embedding_bag`` with
    per-sample weights), whose table gradient reuses the slots' sort of ``_SlotScores``
    (autograd's sorted its own copy and accumulated densely: ~3x the time)."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, table: torch.Tensor, slots: torch.Tensor,
                order: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights, table, slots, order, offsets)
        return F.embedding_bag(slots, table, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, table, slots, order, offsets = ctx.saved_tensors
        b, width = slots.shape
        grad = grad.to(table.dtype)
        # what autograd runs for embedding_bag's per-sample weights: row dot products,
        # without a (B, L, d) tensor
        dw = torch.ops.aten._embedding_bag_per_sample_weights_backward(
            grad, table, slots.flatten(), torch.arange(0, b * width, width, device=grad.device),
            torch.arange(b, device=grad.device).repeat_interleave(width), 0, -1)
        dtable = _row_bags((order, offsets), width, grad, weights)
        return dw.view(b, width).to(weights.dtype), dtable, None, None, None


class HistoryEncoder(nn.Module):
    """The user's recent items (left-padded, most recent last) over the item-id table.

    ``attention`` (default): attention pooling with recency positions, queried by the most
    recent item: O(B·L·d), cheap on CPU, and it lets the last items steer the summary.
    ``transformer``: one self-attention layer read at the most recent position (SASRec-like;
    ~4x the cost, for GPUs). ``mean``: a masked mean.
    """

    # attention scores as one (B, table) GEMM while the table has at most this many rows per
    # history slot (ML-100K: 34), else as B·L row dot products
    gemm_rows_per_slot = 64

    def __init__(self, item_table: nn.Embedding, length: int, dim: int, mode: str,
                 dropout: float) -> None:
        super().__init__()
        self.item_table = item_table
        self.mode = mode
        self.proj = nn.Linear(item_table.embedding_dim, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        if mode == "attention":
            self.query = nn.Linear(dim, dim)
        elif mode == "transformer":
            self.layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim,
                                                    dropout=dropout, batch_first=True)

    def projected(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(table, slots)`` with ``table[slots] == proj(item_table(idx))``: each distinct
        item is projected once, not once per history slot (B·L rows, mostly repeats). The
        whole catalogue when it is smaller than the slots, else the step's distinct items."""
        n = self.item_table.num_embeddings
        if n <= idx.numel() or torch.onnx.is_in_onnx_export():  # an export: any batch size
            rows, slots = torch.arange(n, device=idx.device), idx
        else:
            rows, slots = torch.unique(idx, return_inverse=True)
        return self.proj(self.item_table(rows)), slots  # the table's padding row stays frozen

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        idx = history.long()  # (B, L)
        mask = idx > 0
        table, slots = self.projected(idx)
        pos = self.pos[-idx.shape[1]:]
        if self.mode == "attention" and torch.onnx.is_in_onnx_export():
            return self._attend_plain(F.embedding(slots, table) + pos, mask)
        if self.mode == "attention":
            return self._attend(table, slots, mask, pos)
        x = F.embedding(slots, table)  # (B, L, dim)
        if self.mode == "mean":
            return masked_mean(x, mask)
        x = x + pos
        pad = ~mask
        pad[:, -1] = False  # an empty history still attends to one (zero) slot
        return self.layer(x, src_key_padding_mask=pad)[:, -1]

    def _weights(self, table: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor,
                 pos: torch.Tensor, by_row: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """(B, L) attention weights with x = table[slots] + pos, without building x: the
        scores x·q are table·q gathered at the slots (one GEMM while the table is small,
        else row dot products) plus pos·q."""
        # the latest item asks; index_select, as its backward is deterministic (x[i] is not)
        q = self.query(table.index_select(0, slots[:, -1]) + pos[-1]) / table.shape[1] ** 0.5
        gemm = table.shape[0] <= self.gemm_rows_per_slot * slots.shape[1]
        if torch.is_grad_enabled():  # training: the hand-written backward
            by_row = by_row or _by_row(slots, len(table))
            scores = _SlotScores.apply(q, table, slots, gemm, *by_row)
        elif gemm:  # inference (validation, serving): the same numbers, no sort
            scores = (q @ table.T).gather(1, slots)
        else:
            scores = torch.bmm(F.embedding(slots, table), q.unsqueeze(2)).squeeze(2)
        scores = (scores + q @ pos.T).masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1).nan_to_num(0.0)  # empty history -> zeros

    def _attend(self, table: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor,
                pos: torch.Tensor) -> torch.Tensor:
        """Attention pooling with no (B, L, dim) tensor: sum_l w_l x_l is one weighted bag of
        table rows plus w·pos."""
        # the bag wants the table's dtype (bf16 under CUDA autocast; softmax gave fp32)
        if not torch.is_grad_enabled():
            weights = self._weights(table, slots, mask, pos)
            return F.embedding_bag(slots, table, mode="sum",
                                   per_sample_weights=weights.to(table.dtype)) + weights @ pos
        by_row = _by_row(slots, len(table))  # one sort for both backwards
        weights = self._weights(table, slots, mask, pos, by_row)
        return _WeightedBag.apply(weights.to(table.dtype), table, slots, *by_row) + \
            weights @ pos

    def _attend_plain(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same pooling written over x = table[slots] + pos (B, L, dim): what an ONNX
        export traces (the exporter has no weighted ``embedding_bag``)."""
        q = self.query(x[:, -1]) / x.shape[-1] ** 0.5
        scores = (x * q.unsqueeze(1)).sum(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * x).sum(1)

    def attention(self, history: torch.Tensor) -> torch.Tensor | None:
        """(B, L) attention weights over the history slots (``attention`` mode; else None):
        what ``unirec explain`` shows beside each history item's leave-one-out delta."""
        if self.mode != "attention":
            return None
        idx = history.long()
        table, slots = self.projected(idx)
        return self._weights(table, slots, idx > 0, self.pos[-idx.shape[1]:])
