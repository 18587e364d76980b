"""Losses over (user vectors, positive item vectors, negatives), in a registry.

Every loss receives one ``LossInput`` (unit vectors of the batch's users, positives and sampled
negatives, with their log-Q corrections and weights); a user's own training positives are never
counted as negatives (``mask_batch`` / ``mask_neg``, built by ``unirec.train.step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unirec.registry import Registry

LOSSES: Registry[type] = Registry("loss")


@dataclass
class LossInput:
    """Everything a loss may need for one batch."""

    user_vec: torch.Tensor  # (B, d) unit vectors
    item_vec: torch.Tensor  # (B, d) the positives' vectors
    neg_vec: torch.Tensor  # (S, d) sampled negatives' vectors (S may be 0)
    logq_items: torch.Tensor  # (B,) log expected count of each in-batch item as a negative
    logq_neg: torch.Tensor  # (S,)
    mask_batch: torch.Tensor  # (B, B) True where column item is a positive of row user
    mask_neg: torch.Tensor  # (B, S)
    weight: torch.Tensor  # (B,) sample weights
    temperature: float
    logq: bool
    mask: torch.Tensor | None = None  # (B, B+S) mask_batch | mask_neg in one with its (B, B)
    # diagonal (each row's own positive) already False: saves the softmax loss a copy
    # the compact form (losses with ``compact = True``; unirec.train.step builds it): the
    # step's distinct candidates once each, instead of B + S columns with repeats. There the
    # vector and logQ fields above are filled as usual, but mask_batch and mask_neg both hold
    # compact_mask (the (B, B + S) masks are what the compact form does not build)
    candidates: torch.Tensor | None = None  # (D, d) distinct candidates' unit vectors
    bias: torch.Tensor | None = None  # (D,) log(count among the B + S) - logQ (if logq)
    target: torch.Tensor | None = None  # (B,) each row's positive: its column of candidates
    target_bias: torch.Tensor | None = None  # (B,) -logQ of the row's positive (0 without)
    compact_mask: torch.Tensor | None = None  # (B, D) True where a column is a positive of
    # the row's user (its own target included: the loss puts the target back, counted once)


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (loss * weight).sum() / weight.sum().clamp(min=1e-12)


class _CompactLogSumExp(torch.autograd.Function):
    """Per-row log-sum-exp of the masked (B, D) logits ``users @ candidates.T + bias``, with
    each row's target column set to its positive logit ``positive`` (counted once), and a
    hand-written backward.

    Why by hand: autograd through addmm, masked_fill and logsumexp makes ~10 passes over the
    step's largest tensor (and allocates 4 copies of it); here it is one buffer, turned into
    the softmax in place in the forward, and scaled in place in the backward: the gradient of
    a log-sum-exp is its softmax. A masked entry is -inf, so its softmax is exactly 0.
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, candidates: torch.Tensor, bias: torch.Tensor,
                mask: torch.Tensor, target: torch.Tensor, positive: torch.Tensor
                ) -> torch.Tensor:
        # fp32 throughout, under CUDA's bf16 autocast too (the step hands fp32 vectors)
        with torch.autocast(users.device.type, enabled=False):
            logits = torch.addmm(bias.unsqueeze(0), users, candidates.T)
            logits.masked_fill_(mask, float("-inf"))
            rows = torch.arange(len(users), device=users.device)
            logits.index_put_((rows, target), positive.to(logits.dtype))
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: the buffer becomes the softmax
            total = probs.sum(dim=1, keepdim=True)
            probs.div_(total)
        ctx.save_for_backward(users, candidates, probs)
        return (top + total.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        users, candidates, probs = ctx.saved_tensors
        with torch.autocast(users.device.type, enabled=False):
            d = probs.mul_(grad.unsqueeze(1).to(probs.dtype))  # in place: no retain_graph
            return d @ candidates, d.T @ users, None, None, None, None


@LOSSES.register("softmax")
class SoftmaxLoss:
    """Sampled softmax over in-batch + extra negatives with logQ correction.

    In-batch negatives are drawn in proportion to popularity, so without correction
    popular items are over-penalised; subtracting log q (Yi et al., 2019) fixes the bias.

    ``compact``: the step gives the distinct candidates once each, with log(count) in their
    bias: sum_c exp(l_c) over B + S columns with repeats is sum_j n_j exp(l_j) over the D
    distinct ones (ML-100K, batch 1,024: ~800 of 1,280 columns; batch 4,096: ≤ 1,682 of
    4,352). A row's own positive counts once, its user's other positives never: the same
    loss as the full form, in fewer FLOPs.
    """

    compact = True

    def __call__(self, x: LossInput) -> torch.Tensor:
        if x.candidates is not None:
            return self._compact(x)
        # Few passes over the (B, B+S) logits, the step's largest tensor: the temperature
        # scales the (B, d) users, logQ enters as addmm's bias, the mask is applied in place
        # (the diagonal, each row's own positive, cleared first), and the positive's logit
        # comes from (B, d) row dot products: cross-entropy = logsumexp - positive logit.
        b = len(x.user_vec)
        candidates = torch.cat([x.item_vec, x.neg_vec])
        users = x.user_vec / x.temperature
        positive = (users * x.item_vec).sum(-1)
        if x.logq:
            bias = -torch.cat([x.logq_items, x.logq_neg]).to(users.dtype)
            logits = torch.addmm(bias.unsqueeze(0), users, candidates.T)
            positive = positive + bias[:b]
        else:
            logits = users @ candidates.T
        mask = x.mask
        if mask is None:
            mask = torch.cat([x.mask_batch, x.mask_neg], dim=1)
            mask[:, :b].diagonal().fill_(False)
        logits.masked_fill_(mask, float("-inf"))
        return _weighted_mean(torch.logsumexp(logits, dim=1) - positive, x.weight)

    @staticmethod
    def _compact(x: LossInput) -> torch.Tensor:
        users = x.user_vec / x.temperature
        positive = (users * x.candidates.index_select(0, x.target)).sum(-1) + x.target_bias
        lse = _CompactLogSumExp.apply(users, x.candidates, x.bias.to(users.dtype),
                                      x.compact_mask, x.target, positive.detach())
        return _weighted_mean(lse - positive, x.weight)


def _neg_scores(x: LossInput) -> tuple[torch.Tensor, torch.Tensor]:
    pos = (x.user_vec * x.item_vec).sum(-1) / x.temperature  # (B,)
    neg = (x.user_vec @ x.neg_vec.T) / x.temperature  # (B, S)
    return pos, neg


@LOSSES.register("bce")
class BCELoss:
    """Binary cross-entropy: positives toward 1, sampled negatives toward 0."""

    def __call__(self, x: LossInput) -> torch.Tensor:
        pos, neg = _neg_scores(x)
        valid = (~x.mask_neg).float()
        pos_loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        neg_loss = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg),
                                                      reduction="none")
        neg_loss = (neg_loss * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        return _weighted_mean(pos_loss + neg_loss, x.weight)


@LOSSES.register("bpr")
class BPRLoss:
    """Bayesian personalised ranking: each positive above each sampled negative."""

    def __call__(self, x: LossInput) -> torch.Tensor:
        pos, neg = _neg_scores(x)
        valid = (~x.mask_neg).float()
        pair = -F.logsigmoid(pos.unsqueeze(1) - neg) * valid
        return _weighted_mean(pair.sum(1) / valid.sum(1).clamp(min=1.0), x.weight)
