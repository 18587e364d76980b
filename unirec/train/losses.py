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


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (loss * weight).sum() / weight.sum().clamp(min=1e-12)


@LOSSES.register("softmax")
class SoftmaxLoss:
    """Sampled softmax over in-batch + extra negatives with logQ correction.

    In-batch negatives are drawn in proportion to popularity, so without correction
    popular items are over-penalised; subtracting log q (Yi et al., 2019) fixes the bias.
    """

    def __call__(self, x: LossInput) -> torch.Tensor:
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
