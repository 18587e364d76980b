"""Vectors for users and items the model has never seen, from records in the input format.

Known entities are served from the vectors ``fit`` precomputed (numpy, no torch). A new
user or item, given as a record like ``{"categorical": {"country": "FR"}, "continuous":
{"age": 31}, "history": [101, 102]}``, must go through the trained towers: the record is
compiled with the store's fitted state (``unirec.serve.records``: same ops, same
vocabularies and statistics, never refitted), its text/image fields through the same frozen
embedders, then encoded by the tower with no id embedding (the entity has no trained id).

A user record may carry ``history``: known item ids, most recent last. It feeds the user
tower's history encoder exactly as a known user's recent items do, and
:func:`record_history_index` returns those items' indices so callers can leave them out of
the recommendations (``unirec.store.csr.csr_from_lists`` turns them into ``Recommender.rank``'s
``exclude``).

Loading the towers imports torch (~1-2 s), once per process and store; the text model loads
only when a string the store never embedded shows up. Serving never writes to the store:
the embedding cache is read, not extended (a read-only deployment must work), and new
vectors are remembered in the process instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unirec.errors import DataError, QueryError, StoreError
from unirec.features.embed import EmbeddingCache, ImageEmbedder, TextEmbedder, unreadable
from unirec.model.restore import load_model
from unirec.serve.recommender import Recommender, file_key
from unirec.serve.records import RecordCompiler
from unirec.store import Store
from unirec.store.csr import csr_from_lists, pad_left
from unirec.store.layout import SIDES

_MEMO_LIMIT = 10_000  # new strings/files whose vectors a process remembers
_ENCODERS: dict[tuple[str, int, int], ColdEncoder] = {}


class ColdEncoder:
    """The trained towers plus the store's fitted state: records in, unit vectors out.

    Thread-safe: compiling uses per-call DuckDB cursors, and the tower pass (which briefly
    extends the frozen text/image tables with new rows) holds a lock.
    """

    def __init__(self, store: str | Path, device: str = "cpu") -> None:
        self.store = Path(store)
        self.model = load_model(store, device)
        self.device = torch.device(device)
        self.compiler = RecordCompiler(store)
        manifest = Store(store).manifest
        self.history_length = int(manifest["samples"]["history_length"])
        self._text_cfg, self._image_cfg = manifest["config"]["text"], manifest["config"]["image"]
        self._text: TextEmbedder | None = None
        self._image: ImageEmbedder | None = None
        self._memo: dict[tuple[str, str], tuple[np.ndarray, bool]] = {}
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Width of the served vectors (``TwoTower.served_dim``)."""
        return self.model.served_dim

    # ---- public --------------------------------------------------------------------
    def embed(self, side: str, records: list[dict[str, Any]]) -> np.ndarray:
        """(n, width) float32 vectors of new ``side`` records (ids, if any, unused), as
        ``embed_records`` says."""
        return self.embed_tokens(side, records)[0]

    def embed_tokens(self, side: str, records: list[dict[str, Any]]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``embed``'s vectors and the tower tokens they fuse, (n, T, dim): what the ranking
        stage reads of a new user (``Ranker.project_users``)."""
        if side not in SIDES:
            raise QueryError(f"records are of users or items, not {side!r}")
        self.compiler.check(side, records)
        if not records:
            width = int(self.model.item_table.embedding_dim)
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0, width), np.float32)
        tower = self.model.user if side == "user" else self.model.item
        if not len(tower.encoders) and tower.history is None:
            raise QueryError(f"the {side} tower reads only ids: new {side}s need features "
                             f"(featurize {side} fields, or fit with history)")
        history = self.history_index(records) if side == "user" else None
        compiled = self.compiler.compile(side, records, self._embed_text, self._embed_image)
        rows = {k: torch.from_numpy(np.array(v)).to(self.device) for k, v in compiled.rows.items()}
        hist = None
        if tower.history is not None and history is not None:
            hist = torch.from_numpy(self._pad(history)).to(self.device)
        shared = self.model.shared
        with self._lock, torch.no_grad():
            base_text, base_image = shared.text, shared.image
            try:
                if compiled.new_text is not None:
                    shared.text = torch.cat([base_text, self._tensor(compiled.new_text)])
                if compiled.new_image is not None:
                    shared.image = torch.cat([base_image, self._tensor(compiled.new_image)])
                tokens = tower.tokens(rows, None, hist)
                # a new item: its mapped vector; both: the affinity's columns (if any)
                vectors = tower.served(tower.vectors(tokens), rows, None, hist)
            finally:
                shared.text, shared.image = base_text, base_image
        return vectors.float().cpu().numpy(), tokens.float().cpu().numpy()

    def history_index(self, records: list[dict[str, Any]]) -> list[np.ndarray]:
        """Item indices of each user record's ``history`` (empty where none is given)."""
        rec = Recommender.load(self.store)
        out = []
        for pos, record in enumerate(records):
            items = record.get("history") if isinstance(record, dict) else None
            if items is None:
                out.append(np.zeros(0, np.int64))
                continue
            if not isinstance(items, list) or any(
                    isinstance(i, bool) or not isinstance(i, (int, str)) for i in items):
                raise DataError("must be a list of item ids (most recent last)",
                                field=f"user record {pos}: history")
            out.append(rec.item_index(items, what="history item") if items else
                       np.zeros(0, np.int64))
        return out

    # ---- helpers -------------------------------------------------------------------
    def _pad(self, lists: list[np.ndarray]) -> np.ndarray:
        """(n, L): the last L items of each list, left-padded with 0 (most recent last)."""
        return pad_left(csr_from_lists(lists), self.history_length)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self.device)

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        if self._text is None:
            c = self._text_cfg
            self._text = TextEmbedder(c["model"], c["device"], c["batch_size"],
                                      show_progress_bar=False)
        emb = self._text
        vectors, _ = self._cached("text", texts, [emb.key(t) for t in texts],
                                  lambda todo: (emb.embed(todo), np.zeros(len(todo), bool)))
        return vectors

    def _embed_image(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._image is None:
            c = self._image_cfg
            self._image = ImageEmbedder(c["model"], c["checkpoint"], c["device"],
                                        c["batch_size"])
        emb = self._image
        return self._cached("image", paths, [emb.key(p) for p in paths], emb.embed)

    def _cached(self, kind: str, values: list[str], keys: list[str | None], encode: Any
                ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``values``: process memo, then the store's cache (read only), then
        ``encode`` for the rest. A None key (a file that is not there) is a missing image."""
        emb = self._text if kind == "text" else self._image
        cache = EmbeddingCache.for_model(self.store / "cache", kind, emb.model_id)
        width = self.model.shared.text.shape[1] if kind == "text" else \
            self.model.shared.image.shape[1]
        out = np.zeros((len(values), width), np.float32)
        missing = np.array([k is None for k in keys])
        lookup = [i for i, k in enumerate(keys) if k is not None and (kind, k) not in self._memo]
        for i, k in enumerate(keys):
            if k is not None and (kind, k) in self._memo:
                out[i], missing[i] = self._memo[(kind, k)]
        if lookup:
            found, vectors = cache.lookup([keys[i] for i in lookup], dim=width)
            bad = unreadable(vectors)
            for j, i in enumerate(lookup):
                if found[j]:
                    out[i], missing[i] = (0.0 if bad[j] else vectors[j]), bool(bad[j])
            todo = [i for j, i in enumerate(lookup) if not found[j]]
            if todo:
                vectors, bad = encode([values[i] for i in todo])
                out[todo], missing[todo] = vectors, bad
        for i, k in enumerate(keys):
            if k is not None and len(self._memo) < _MEMO_LIMIT:
                self._memo[(kind, k)] = (out[i].copy(), bool(missing[i]))
        return out, missing


def cold_encoder(store: str | Path) -> ColdEncoder:
    """The process-wide encoder of ``store`` (rebuilt when ``fit`` rewrites the model)."""
    weights = Path(store) / "model" / "model.safetensors"
    for _ in range(5):  # a fit may swap a new model folder in while we load this one
        key = file_key(weights) if weights.is_file() else (str(weights.absolute()), 0, 0)
        if key in _ENCODERS:
            return _ENCODERS[key]
        encoder = ColdEncoder(store)
        if not weights.is_file() or file_key(weights) == key:
            for old in [k for k in _ENCODERS if k[0] == key[0]]:
                del _ENCODERS[old]
            _ENCODERS[key] = encoder
            return encoder
    raise StoreError(f"the model in {str(Path(store) / 'model')!r} keeps changing: try again")


def embed_records(store: str | Path, side: str, records: list[dict[str, Any]]) -> np.ndarray:
    """(n, width) float32 vectors for new ``side`` ("user"/"item") records, as the model's
    served files hold them: the towers' vector (users unit length, items the length of a new
    item in the store, ``train.new_item_scale``), then the category affinity's columns where
    fit made them (``unirec.model.affinity``; users: from their ``history``).

    Records use the input document's format (``categorical``, ``continuous``, ``text``,
    ``image``, ``temporal``; users also ``history``: known item ids, most recent last).
    Ids are optional and never looked up: a record is always treated as a new entity.
    Raises ``DataError``/``QueryError`` naming the record and field for a bad record, and
    ``QueryError`` for a history item that is not in the catalogue.
    """
    return cold_encoder(store).embed(side, records)


def embed_record_tokens(store: str | Path, records: list[dict[str, Any]]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``embed_records`` of new users, with their tower tokens (the ranking stage's input)."""
    return cold_encoder(store).embed_tokens("user", records)


def record_history_index(store: str | Path, records: list[dict[str, Any]]
                         ) -> list[np.ndarray]:
    """Item indices of each user record's ``history``: what to exclude from its top-K."""
    return cold_encoder(store).history_index(records)


