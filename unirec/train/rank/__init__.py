"""The ranking stage: a model over (user, retrieved candidate) pairs, trained after
retrieval (``fit_ranker``; ``refit_ranker`` after ``train.refit``); its networks are
``unirec.model.interactions``, its numpy serving form ``unirec.model.ranker``."""

from unirec.model.interactions import INTERACTIONS, RankNet, register_interaction
from unirec.model.ranker import RankResult
from unirec.train.rank.fit import fit_ranker, refit_ranker

__all__ = ["INTERACTIONS", "RankNet", "RankResult", "fit_ranker", "refit_ranker",
           "register_interaction"]
