"""An HTTP JSON API over a fitted store: ``unirec serve`` (FastAPI + uvicorn).

Endpoints (every answer is JSON; items are ``{"item_id", "score", "title"?}``, best first):

- ``GET /recommend?user=ID&k=10[&exclude_seen=true][&fallback=popular][&stage=auto]
  [&candidates_n=200]``: a known user's top-K from the precomputed vectors, re-ranked by
  the ranking stage (``stage``: auto, rank or retrieve; ``"stage"`` in the answer says which
  ran; numpy). An unknown user is 404 unless
  ``fallback=popular``, which answers with the most popular items (``"fallback": "popular"``
  in the answer says so).
- ``POST /recommend`` with ``{"user_id": ID, "k": 10, ...}`` (as above) or ``{"user":
  {record}, "k": 10, "exclude_seen": true}``: a new user described in the input format
  (``categorical``, ``continuous``, ..., ``history``: known item ids, most recent last),
  encoded by the user tower; the history's items are excluded unless ``exclude_seen`` is false.
- ``GET /similar?item=ID&k=10`` and ``POST /similar`` with ``{"item": {record}, "k": 10}``.
- ``GET /health``: model loaded, counts.
- ``GET /``: the explorer, a web page over the same process (``unirec.serve.explorer``, which
  also adds ``GET /explain?user=ID&item=ID``).

Errors are ``{"error": "one line"}``, never a traceback: an id the model does not know is
404; any other problem with the request (k < 1, malformed JSON, a missing or extra field, a
bad record, an unknown history item) is 400; a store that was re-featurized under the server
(so it has no model yet) is 503. An append (``featurize --append``) is not a re-featurize: the
model it carries keeps answering until ``fit --warm-start`` swaps the extended one in. The
model loads when the app is created and again, whole, when a fit swaps a new one in (the old
one answers until then). Image paths in records are confined
to the served image folders (``serve.images``); images may also come as base64 bytes.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException

from unirec.errors import QueryError, StoreError, UnirecError, require_extra
from unirec.serve import api
from unirec.serve.images import ImageFolders
from unirec.serve.recommender import Recommender

Id = StrictInt | StrictStr  # JSON true or 1.5 is not an id


class NotFound(UnirecError):
    """An id in the request path/query/body that the model does not know (HTTP 404)."""


class RecommendBody(BaseModel):
    """``POST /recommend``: exactly one of ``user`` (a record) or ``user_id``."""

    model_config = ConfigDict(extra="forbid")
    user: dict[str, Any] | None = None
    user_id: Id | None = None
    k: StrictInt = Field(10, ge=1)
    exclude_seen: bool = True
    fallback: Literal["popular"] | None = None
    stage: Literal["auto", "rank", "retrieve"] = "auto"
    candidates_n: StrictInt | None = Field(None, ge=1)


class SimilarBody(BaseModel):
    """``POST /similar``: a new item's record (or a known ``item_id``)."""

    model_config = ConfigDict(extra="forbid")
    item: dict[str, Any] | None = None
    item_id: Id | None = None
    k: StrictInt = Field(10, ge=1)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _items(rec: Recommender, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """JSON rows, padding (NaN score: the catalogue ran out) left out."""
    ids, scores = np.ravel(ids), np.ravel(scores)
    keep = ~np.isnan(scores)
    ids, scores = ids[keep], scores[keep]
    titles = rec.titles(rec.item_index(list(ids))) if rec.title_field and len(ids) else None
    rows = [{"item_id": _plain(i), "score": float(s)} for i, s in zip(ids, scores, strict=True)]
    for row, title in zip(rows, titles or [], strict=False):
        row["title"] = title
    return rows


def _message(exc: RequestValidationError) -> str:
    """Pydantic's first complaint as one line: where, then what."""
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return f"malformed JSON body: {err.get('ctx', {}).get('error', err['msg'])}"
    where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
    return f"{where}: {err['msg']}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(store: str | Path = "unirec-store", *, cold: bool = True,
               image_dirs: list[str | Path] = ()) -> FastAPI:
    """The API over ``store``; vectors (and with ``cold``, the towers) load now.

    A fit that swaps a new model in is picked up by the next request (``Recommender.load``
    is a stat when nothing changed); until the new folder is complete the old model answers.
    Records may name images only under the store's input folder and ``image_dirs``
    (``serve.images``), or send them as base64.
    """
    store = Path(store)
    Recommender.load(store)
    encoder = None
    uploads = tempfile.mkdtemp(prefix="unirec-serve-images-")
    folders = ImageFolders(store, list(image_dirs), Path(uploads))
    if cold:
        require_extra("train", "cold start (POSTed records of new users/items)")
        from unirec.serve.cold import cold_encoder  # torch: once, at start-up

        encoder = cold_encoder(store)
    app = FastAPI(title="unirec", summary="Recommendations from a fitted unirec store")
    weakref.finalize(app, shutil.rmtree, uploads, ignore_errors=True)  # sent images go too

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(UnirecError)
    async def _bad(request: Request, exc: UnirecError) -> JSONResponse:
        return _error(503 if isinstance(exc, StoreError) else 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    def known_user(user: Id, k: int, exclude_seen: bool, fallback: str | None,
                   stage: str = "auto", candidates_n: int | None = None) -> dict[str, Any]:
        rec = Recommender.load(store)
        index = int(rec.user_index([user])[0])
        if index < 0 and fallback is None:
            raise NotFound(f"user {user!r} is not in the store ({rec.n_users} users): POST "
                           "their features as {\"user\": {...}}, or add fallback=popular")
        ids, scores = api.recommend(user, min(k, rec.n_items), store=store,
                                    exclude_seen=exclude_seen, fallback=fallback, stage=stage,
                                    candidates_n=candidates_n)
        ranked = index > 0 and rec.stage_ranker(stage) is not None
        out = {"user": _plain(rec.user_ids(np.array([index]))[0]) if index > 0 else user,
               "stage": "rank" if ranked else "retrieve", "items": _items(rec, ids, scores)}
        return out if index > 0 else {**out, "fallback": fallback}

    def need_cold(what: str) -> None:
        if encoder is None:
            raise UnirecError(f"{what} records need the towers: start the server with --cold "
                              "(the train extra: pip install 'unirec[train]')")

    @app.get("/health")
    def health() -> dict[str, Any]:
        rec = Recommender.load(store)
        return {"status": "ok", "store": str(store), "users": rec.n_users,
                "items": rec.n_items, "dim": int(rec.items.shape[1]),
                "cold_start": encoder is not None, "title_field": rec.title_field,
                "ranking_stage": rec.ranker is not None and rec.ranker.active}

    @app.get("/recommend")
    def recommend_get(user: str, k: int = Query(10, ge=1), exclude_seen: bool = True,
                      fallback: Literal["popular"] | None = None,
                      stage: Literal["auto", "rank", "retrieve"] = "auto",
                      candidates_n: int | None = Query(None, ge=1)) -> dict[str, Any]:
        return known_user(user, k, exclude_seen, fallback, stage, candidates_n)

    @app.post("/recommend")
    def recommend_post(body: RecommendBody) -> dict[str, Any]:
        if (body.user is None) == (body.user_id is None):
            raise UnirecError("give exactly one of user (a record of a new user) or user_id")
        if body.user_id is not None:
            return known_user(body.user_id, body.k, body.exclude_seen, body.fallback,
                              body.stage, body.candidates_n)
        need_cold("user")
        rec = Recommender.load(store)
        record = folders.confine(body.user, "user")
        ids, scores = api.recommend(k=min(body.k, rec.n_items), store=store,
                                    exclude_seen=body.exclude_seen, user_records=[record],
                                    stage=body.stage, candidates_n=body.candidates_n)
        return {"user": body.user.get("user_id"), "items": _items(rec, ids, scores),
                "stage": "rank" if rec.stage_ranker(body.stage) is not None else "retrieve"}

    @app.get("/similar")
    def similar_get(item: str, k: int = Query(10, ge=1)) -> dict[str, Any]:
        return similar(item, None, k)

    @app.post("/similar")
    def similar_post(body: SimilarBody) -> dict[str, Any]:
        if (body.item is None) == (body.item_id is None):
            raise UnirecError("give exactly one of item (a record of a new item) or item_id")
        return similar(body.item_id, body.item, body.k)

    def similar(item: Id | None, record: dict[str, Any] | None, k: int) -> dict[str, Any]:
        rec = Recommender.load(store)
        k = min(k, rec.n_items)
        if record is not None:
            need_cold("item")
            ids, scores = api.similar(k=k, store=store,
                                      item_record=folders.confine(record, "item"))
            return {"item": record.get("item_id"), "items": _items(rec, ids, scores)}
        try:
            index = int(rec.item_index([item])[0])
        except QueryError as exc:
            raise NotFound(str(exc)) from None
        ids, scores = api.similar(item, k, store=store)
        return {"item": _plain(rec.item_ids(np.array([index]))[0]),
                "items": _items(rec, ids, scores)}

    from unirec.serve.explorer import mount

    mount(app, store, Recommender.load(store), cold=encoder is not None)
    return app


def serve(store: str | Path = "unirec-store", host: str = "127.0.0.1", port: int = 8000,
          *, cold: bool = True, image_dirs: list[str | Path] = ()) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store, cold=cold, image_dirs=image_dirs), host=host, port=port,
                log_level="info")
