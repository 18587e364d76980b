"""One training step: negatives, forward, loss, backward, AdamW, with the per-step work a
CPU pays for kept small.

What made the previous step slow on a CPU (profile in docs/benchmarks.md): a binary search
per (user, candidate) pair for the "never a negative" mask, history items projected once per
slot instead of once per distinct item, and thousands of small ops. The mask here looks only
at the batch users' own training positives (a CSR walk), and the model
(``unirec.model.towers``) does item work once per distinct item.
"""

from __future__ import annotations

import torch

from unirec.config import TrainConfig
from unirec.train.losses import LossInput


class PositiveMask:
    """``mask(users, candidates)``: (B, C) True where ``candidates[c]`` is one of
    ``users[b]``'s training positives.

    Only the batch users' own positives can collide, so instead of searching every
    (user, candidate) pair among all training pairs, walk those users' CSR rows (their
    positives), keep the items that are candidates, and mark a (distinct users x distinct
    candidates) grid, gathered back to (B, C).
    """

    def __init__(self, keys: torch.Tensor, n_users: int, n_items: int) -> None:
        """``keys``: sorted ``user * n_items + item`` of the training pairs."""
        users = keys // n_items
        self.items = keys % n_items  # grouped by user (keys are sorted)
        counts = torch.bincount(users, minlength=n_users)
        self.indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.column = torch.full((n_items,), -1, dtype=torch.long, device=keys.device)

    def __call__(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        uu, urow = torch.unique(users, return_inverse=True)
        cc, ccol = torch.unique(candidates, return_inverse=True)
        return self._grid(uu, cc)[urow.unsqueeze(1), ccol.unsqueeze(0)]

    def distinct(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, D) for ``candidates`` already distinct (the compact softmax's columns)."""
        uu, urow = torch.unique(users, return_inverse=True)
        return self._grid(uu, candidates).index_select(0, urow)

    def _grid(self, uu: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
        """(distinct users, distinct candidates): True where the item is the user's positive."""
        start, count = self.indptr[uu], self.indptr[uu + 1] - self.indptr[uu]
        total = int(count.sum())
        row = torch.repeat_interleave(torch.arange(len(uu), device=uu.device), count,
                                      output_size=total)
        first = torch.repeat_interleave(start - (count.cumsum(0) - count), count,
                                        output_size=total)
        pos_items = self.items[first + torch.arange(total, device=uu.device)]
        self.column[cc] = torch.arange(len(cc), device=uu.device)  # item -> grid column
        col = self.column[pos_items]
        self.column[cc] = -1  # leave the scratch clean for the next call
        hit = col >= 0
        grid = torch.zeros(len(uu), len(cc), dtype=torch.bool, device=uu.device)
        grid[row[hit], col[hit]] = True
        return grid


class Step:
    """Callable on a batch dict (``user``, ``item``, ``history``, ``weight``): one
    optimisation step."""

    def __init__(self, net: torch.nn.Module, opt: torch.optim.Optimizer, sampler,
                 loss_fn, positives: PositiveMask, cfg: TrainConfig, device: torch.device,
                 bf16: bool, *, model: torch.nn.Module | None = None,
                 held: torch.Tensor | None = None, content: bool = False) -> None:
        self.net, self.opt, self.sampler, self.loss_fn = net, opt, sampler, loss_fn
        self.positives, self.cfg, self.device, self.bf16 = positives, cfg, device, bf16
        # held: cold-validation items hidden from training (unirec.train.coldval); content:
        # add the content-only loss (train.content_loss)
        self.model, self.held, self.content = model, held, content

    def loss(self, batch: dict[str, torch.Tensor], negs: torch.Tensor) -> torch.Tensor:
        """The forward half, on given negatives (tests compare it with a plain step)."""
        if getattr(self.loss_fn, "compact", False):
            return self._compact_loss(batch, negs)
        user, item = batch["user"].long(), batch["item"].long()
        mask = self.positives(user, torch.cat([item, negs]))
        mask[:, :len(user)].diagonal().fill_(False)  # a row's own positive is its target
        b, cfg, logq = len(user), self.cfg, self.sampler.logq
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            u, v, nv, *plain = self.net(user, batch["history"], item, negs, self.content)
            x = LossInput(
                user_vec=u.float(), item_vec=v.float(), neg_vec=nv.float(),
                logq_items=logq[item], logq_neg=logq[negs], mask_batch=mask[:, :b],
                mask_neg=mask[:, b:], weight=batch["weight"].float(),
                temperature=cfg.temperature, logq=cfg.logq, mask=mask)
            loss = self.loss_fn(x)
            if self.content:  # the same task for the content path alone
                x.item_vec, x.neg_vec = plain[0].float(), plain[1].float()
                loss = loss + cfg.content_loss * self.loss_fn(x)
            return loss

    def _compact_loss(self, batch: dict[str, torch.Tensor], negs: torch.Tensor
                      ) -> torch.Tensor:
        """The loss over the step's distinct candidates (``LossInput.candidates``): the item
        tower, the positive mask and the logits all have D columns, not B + S."""
        user, item = batch["user"].long(), batch["item"].long()
        distinct, slot, count = torch.unique(torch.cat([item, negs]), return_inverse=True,
                                             return_counts=True)
        target = slot[:len(user)]
        mask = self.positives.distinct(user, distinct)
        cfg, logq = self.cfg, self.sampler.logq
        bias = count.float().log()
        target_bias = torch.zeros(len(user), device=bias.device)
        if cfg.logq:
            bias, target_bias = bias - logq[distinct], -logq[item]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            u, v, *plain = self.net(user, batch["history"], distinct, None, self.content,
                                    distinct=True)
            # the full form's vectors are cheap rows of the compact ones; its (B, B + S)
            # masks are what the compact form saves: both mask fields hold the (B, D) one
            x = LossInput(
                user_vec=u.float(), item_vec=v.index_select(0, target).float(),
                neg_vec=v.index_select(0, slot[len(user):]).float(), logq_items=target_bias,
                logq_neg=logq[negs] if cfg.logq else torch.zeros(len(negs), device=bias.device),
                mask_batch=mask, mask_neg=mask,
                weight=batch["weight"].float(), temperature=cfg.temperature, logq=cfg.logq,
                candidates=v.float(), bias=bias, target=target, target_bias=target_bias,
                compact_mask=mask)
            loss = self.loss_fn(x)
            if self.content:  # the same task for the content path alone
                c = plain[0].float()
                x.candidates, x.item_vec = c, c.index_select(0, target)
                x.neg_vec = c.index_select(0, slot[len(user):])
                loss = loss + cfg.content_loss * self.loss_fn(x)
            return loss

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int] | None:
        """(mean loss, samples) of one step; None when nothing was left to train on."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.held is not None:
            from unirec.train.coldval import hide
            batch = hide(self.held, batch)
            if not len(batch["item"]):
                return None
        loss = self.loss(batch, self.sampler.sample())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.held is not None:  # id rows of held items stay zero (an id_sequence
            with torch.no_grad():  # feature may still name them): served as new
                self.model.item_table.weight[self.held] = 0.0
        return loss.detach(), len(batch["user"])


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters instead of a dozen ops per tensor) where
    this torch supports it on ``device``, else the multi-tensor (``foreach``) form."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 foreach=device.type != "cpu" or None)
