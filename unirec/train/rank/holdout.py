"""``train.rank.fit_on = "validation"``: the ranker learns from interactions retrieval never
trained on.

Why: trained on retrieval's own training samples, the ranker sees positives retrieval has
already fitted (their scores and id tokens say "chosen" far more loudly than they will for a
future interaction), so what it learns transfers poorly. The validation slice is the
nearest thing to what serving faces (later in time, unseen by retrieval): a seeded share of
the validation users' slices trains the ranker, the other users' slices choose its epoch
and decide ``auto``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from unirec.model.inputs import Inputs
from unirec.store.csr import csr_rows
from unirec.train.rank.data import Samples


def _subset(s: Samples, mask: np.ndarray) -> Samples:
    return dataclasses.replace(s, **{f.name: getattr(s, f.name)[mask]
                                     for f in dataclasses.fields(s) if f.name != "type_names"})


def split_validation(inp: Inputs, val: Samples, share: float, seed: int
                     ) -> tuple[Samples, Inputs, Samples]:
    """(training samples: the chosen users' validation slices; the Inputs whose validation
    protocol covers only the other users; those users' validation samples)."""
    chosen = np.random.default_rng([seed, 16]).random(len(inp.val_users)) < share
    learn = np.isin(val.user, inp.val_users[chosen])
    rest = ~chosen
    judged = dataclasses.replace(
        inp, val_users=inp.val_users[rest], val_history=inp.val_history[rest],
        val_truth=csr_rows(inp.val_truth, np.flatnonzero(rest)),
        val_exclude=csr_rows(inp.val_exclude, np.flatnonzero(rest)))
    return _subset(val, learn), judged, _subset(val, ~learn)


def join_samples(a: Samples, b: Samples) -> Samples:
    """``a``'s samples then ``b``'s (the same type names)."""
    return dataclasses.replace(a, **{f.name: np.concatenate([getattr(a, f.name),
                                                             getattr(b, f.name)])
                                     for f in dataclasses.fields(a) if f.name != "type_names"})


def positive_keys(inp: Inputs, extra: Samples) -> torch.Tensor:
    """Training positives plus ``extra``'s pairs, as sorted ``user * n_items + item`` keys
    (never a negative for their user)."""
    keys = np.concatenate([inp.positive_keys.numpy(), extra.user * inp.n_items + extra.item])
    return torch.from_numpy(np.unique(keys))
