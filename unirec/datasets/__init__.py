"""Datasets for tests, demos and benchmarks: a synthetic generator with planted structure,
and a converter for raw MovieLens files (which may not be redistributed, so are never shipped).
"""

from unirec.datasets.movielens import convert_movielens, detect_layout
from unirec.datasets.synthetic import (
    Synthetic,
    default_shape,
    generate,
    synthesize,
    write_document,
    write_folder,
    write_holdout,
)

__all__ = ["Synthetic", "convert_movielens", "default_shape", "detect_layout", "generate",
           "synthesize", "write_document", "write_folder", "write_holdout"]
