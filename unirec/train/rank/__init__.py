"""The ranking stage: a model over (user, retrieved candidate) pairs, trained after
retrieval (``fit_ranker``), served in numpy (``unirec.serve.rank``)."""

from unirec.train.rank.fit import RankResult, fit_ranker
from unirec.train.rank.models import INTERACTIONS, RankNet, register_interaction

__all__ = ["INTERACTIONS", "RankNet", "RankResult", "fit_ranker", "register_interaction"]
