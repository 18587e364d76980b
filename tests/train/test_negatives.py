"""Items never positive in training are never negatives: else new items learn to sink."""

from __future__ import annotations

import pytest
import torch

from unirec.config import TrainConfig
from unirec.train.loop import Sampler


@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_extra_negatives_come_only_from_items_seen_in_training(kind: str) -> None:
    pop = torch.tensor([0.0, 5.0, 0.0, 1.0, 0.0, 2.0])  # items 2 and 4 are new
    torch.manual_seed(0)
    s = Sampler(pop, TrainConfig(negative_sampler=kind, negatives=4000), batch=8, n_neg=4000)
    drawn = torch.bincount(s.sample(), minlength=len(pop))
    assert drawn[[0, 2, 4]].sum() == 0
    assert (drawn[[1, 3, 5]] > 0).all()
    if kind == "uniform":  # every seen item alike, whatever its popularity
        assert abs(drawn[1] - drawn[3]) < 0.1 * drawn[1]


def test_a_store_without_popularity_still_samples() -> None:
    s = Sampler(torch.zeros(4), TrainConfig(), batch=2, n_neg=10)
    assert s.sample().min() >= 1
