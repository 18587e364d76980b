"""Featurize ops, one small class a file, each registered in ``OPS`` by name.

Each op's docstring states its reserved indices. A plugin op registers the same way
(``@OPS.register("name")``) or through the ``unirec.ops`` entry-point group.
"""

from unirec.features.ops import (  # noqa: F401
    bucketize,
    categorify,
    embeddings,
    normalize,
    sequences,
)
from unirec.features.ops.base import Context, FeatureSpec, Op, Output
from unirec.features.ops.registry import OPS

__all__ = ["OPS", "Context", "FeatureSpec", "Op", "Output"]
