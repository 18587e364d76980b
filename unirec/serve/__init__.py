"""Serving: answer queries from a fitted model (recommend, similar, score, embed, evaluate).

``unirec.serve.api`` holds the verbs; ``recommender`` the numpy core they share.
"""
