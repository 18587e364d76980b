"""The model folder (``store/model``): the two-tower network built from a store and a train
config, its weights, the serving bundle, and how every reader tells whether it is stale.

Importing this package imports nothing heavy; the network modules import torch.
"""
