"""Datasets for tests, demos and benchmarks: a synthetic generator with planted structure."""

from unirec.datasets.synthetic import (
    Synthetic,
    default_shape,
    generate,
    synthesize,
    write_document,
    write_folder,
)

__all__ = ["Synthetic", "default_shape", "generate", "synthesize", "write_document",
           "write_folder"]
