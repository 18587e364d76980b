"""Frozen text and image embeddings with a content-addressed on-disk cache.

Importing this package is cheap: torch, timm and sentence-transformers load only when a
model is first needed.
"""

from __future__ import annotations

from unirec.features.embed.cache import EmbeddingCache, unreadable
from unirec.features.embed.image import ImageEmbedder
from unirec.features.embed.text import TextEmbedder

__all__ = ["EmbeddingCache", "ImageEmbedder", "TextEmbedder", "unreadable"]
