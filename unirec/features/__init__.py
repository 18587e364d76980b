"""What a record becomes: the ops and their fitted state, the field rules, the frozen
text/image embedders and their cache.

One definition, used in bulk by ``unirec.featurize`` (every entity of a document) and per
record by ``unirec.serve`` (a user or item the store has never seen). Importing this package
imports nothing heavy: torch loads only when an embedder first needs a model.
"""
