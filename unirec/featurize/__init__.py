"""The featurize stage: compile a JSON document (or a folder of sections) into a store."""

from unirec.featurize.run import featurize

__all__ = ["featurize"]
