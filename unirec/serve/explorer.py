"""The explorer: a small web page at ``/`` over the same app, process and numpy path as the
JSON API (``unirec serve``).

Plain HTML/JS/CSS shipped in the package (``unirec/serve/static``): no build step, no CDN.
The page reads JSON from the routes below; recommendations and similar items come from
``unirec.serve.api`` exactly as ``/recommend`` and ``/similar`` answer them, explanations
from ``unirec.serve.explain`` (the towers: only when the server loaded them, i.e. not with
``--no-cold``).

Images: an item's thumbnail is served by ITEM ID from the path featurize recorded for it in
the store (``image_embeddings``); the client never names a path, so nothing else on the
machine can be read through these routes.

Routes: ``GET /`` (the page), ``/static/{app.js,style.css}``, ``/explorer/users?q=``,
``/explorer/user?user=ID&k=``, ``/explorer/item?item=ID&k=``, ``/explorer/image/{item_id}``,
``/explorer/store``, ``/explorer/metrics.png``, ``/explorer/form``, ``POST /explorer/cold``
and ``GET /explain?user=ID&item=ID`` (JSON explanations, also for API clients).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from unirec.errors import QueryError, UnirecError
from unirec.serve import api
from unirec.serve.http import NotFound
from unirec.serve.recommender import Recommender
from unirec.store import Store, serving_histories
from unirec.store.sql import ident

STATIC = Path(__file__).parent / "static"
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".gif": "image/gif", ".webp": "image/webp"}
_ITEMS = Query(..., description="Item ids to explain: repeat item=, or comma-separate.")
_VOCAB_CHOICES = 100  # most frequent values offered per categorical field in the form


class ColdBody(BaseModel):
    """``POST /explorer/cold``: the form's new user (a record) and K."""

    model_config = ConfigDict(extra="forbid")
    user: dict[str, Any]
    k: int = Field(10, ge=1)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def item_images(store: Path, n_items: int) -> np.ndarray:
    """(n_items + 1,) object: each item index's image file (first image field) or None."""
    out = np.full(n_items + 1, None, object)
    st = Store(store)
    feats = [f for f in st.manifest["features"] if f["side"] == "item" and f["group"] == "image"]
    if not feats:
        return out
    got = st.sql(f'SELECT f.item_index AS i, e.path AS p FROM item_features f JOIN '
                 f'image_embeddings e ON e.image_index = f.{ident(feats[0]["name"])} '
                 "WHERE NOT e.missing")
    idx = got["i"].to_numpy()
    out[idx] = got["p"].to_list()
    return out


class Explorer:
    """What the explorer routes need, loaded once with the app."""

    def __init__(self, store: Path, rec: Recommender, explain: bool) -> None:
        self.store = store
        self.rec = rec
        self.images = item_images(store, rec.n_items)
        self.explainer = None
        if explain:
            from unirec.serve.explain import explainer

            self.explainer = explainer(store)

    def card(self, idx: np.ndarray, scores: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Item cards: id, title, thumbnail URL (None without an image), score."""
        idx = np.asarray(idx, np.int64)
        ids = self.rec.item_ids(idx)
        titles = self.rec.titles(idx) or [""] * len(idx)
        out = []
        for j, i in enumerate(idx):
            card = {"item_id": _plain(ids[j]), "title": titles[j],
                    "image": f"/explorer/image/{ids[j]}" if self.images[i] else None}
            if scores is not None:
                card["score"] = float(scores[j])
            out.append(card)
        return out

    def record(self, side: str, key: Any) -> dict[str, Any]:
        """The raw input record of one user or item (as featurize kept it)."""
        table, id_col = ("users", "user_id") if side == "user" else ("items", "item_id")
        rows = Store(self.store).sql(f"SELECT * EXCLUDE (position) FROM {table} "
                                     f"WHERE {id_col} = ?", [key]).to_dicts()
        return {g: v for g, v in rows[0].items() if v not in (None, {})} if rows else {}

    def user(self, user: str, k: int) -> dict[str, Any]:
        index = int(self.rec.user_index([user])[0])
        if index < 0:
            raise NotFound(f"user {user!r} is not in the store ({self.rec.n_users} users)")
        key = _plain(self.rec.user_ids(np.array([index]))[0])
        if self.explainer is not None:
            hist = self.explainer.histories(np.array([index]))[0]
        else:  # no towers (--no-cold, or no train extra): the same query, torch-free
            length = int(Store(self.store).manifest["samples"]["history_length"])
            hist = serving_histories(Store(self.store), length, np.array([index]))[0]
        hist = hist[hist > 0][::-1]  # most recent first
        k = min(k, self.rec.n_items)
        ids, scores = api.recommend(key, k, store=self.store)
        idx = self.rec.item_index(list(ids))
        items = self.card(idx, scores)
        if self.explainer is not None and len(idx):
            from unirec.serve.explain import nested

            ex = self.explainer.explain(np.array([index]), idx[None, :], scores[None, :])
            for item, why in zip(items, nested(ex, self.rec)[0], strict=True):
                item["explanation"] = why
        return {"user_id": key, "profile": self.record("user", key),
                "history": self.card(hist), "items": items,
                "explanations": self.explainer is not None}

    def item(self, item: str, k: int) -> dict[str, Any]:
        try:
            index = int(self.rec.item_index([item])[0])
        except QueryError as exc:
            raise NotFound(str(exc)) from None
        key = _plain(self.rec.item_ids(np.array([index]))[0])
        ids, scores = api.similar(key, min(k, self.rec.n_items), store=self.store)
        return {**self.card(np.array([index]))[0], "record": self.record("item", key),
                "similar": self.card(self.rec.item_index(list(ids)), scores)}

    def store_page(self) -> dict[str, Any]:
        st = Store(self.store)
        metrics = self.store / "model" / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] \
            if metrics.is_file() else []
        return {"store": str(self.store), "tables": [{"table": t, "rows": n}
                                                     for t, n in st.counts().items()],
                "features": [{"side": f["side"], "name": f["name"], "op": f["op"]}
                             for f in st.manifest["features"]],
                "metrics": rows, "plot": (self.store / "model" / "metrics.png").is_file()}

    def form(self) -> dict[str, Any]:
        """The user fields the cold-start form offers: categoricals with their most frequent
        values, continuous fields with their training mean."""
        st = Store(self.store)
        fields = []
        for f in st.manifest["features"]:
            if f["side"] != "user" or f["group"] not in ("categorical", "continuous"):
                continue
            entry = {"group": f["group"], "field": f["field"]}
            if f["group"] == "categorical":
                entry["choices"] = st.sql(
                    "SELECT value FROM vocab WHERE field = ? ORDER BY count DESC, value "
                    f"LIMIT {_VOCAB_CHOICES}", [f"user.{f['name']}"])["value"].to_list()
            else:
                got = st.sql("SELECT mean FROM stats WHERE field = ?", [f"user.{f['name']}"])
                entry["default"] = round(float(got["mean"][0]), 2) if got.height else None
            fields.append(entry)
        return {"fields": fields, "cold_start": self.explainer is not None}


def mount(app: FastAPI, store: Path, rec: Recommender, *, cold: bool) -> None:
    """Add the explorer's page and routes to ``app`` (``unirec.serve.http.create_app``)."""
    ex = Explorer(store, rec, explain=cold)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in _ASSETS:  # a fixed list: no path from the client reaches the disk
            raise NotFound(f"no asset {name!r}")
        return Response((STATIC / name).read_text(), media_type=_ASSETS[name])

    @app.get("/explorer/users")
    def users(q: str = "", limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        ids = rec.user_ids(np.arange(1, rec.n_users + 1))
        text = ids.astype(str)
        hit = np.flatnonzero(np.char.find(np.char.lower(text), q.lower()) >= 0) if q \
            else np.arange(len(ids))
        seen = np.diff(rec.seen(hit[:limit] + 1)[0])
        return {"total": int(len(hit)), "users": [
            {"user_id": _plain(ids[i]), "interactions": int(n)}
            for i, n in zip(hit[:limit], seen, strict=True)]}

    @app.get("/explorer/user")
    def user(user: str, k: int = Query(10, ge=1)) -> dict[str, Any]:
        return ex.user(user, k)

    @app.get("/explorer/item")
    def item(item: str, k: int = Query(10, ge=1)) -> dict[str, Any]:
        return ex.item(item, k)

    @app.get("/explorer/image/{item_id}", include_in_schema=False)
    def image(item_id: str) -> FileResponse:
        try:
            index = int(rec.item_index([item_id])[0])
        except QueryError as exc:
            raise NotFound(str(exc)) from None
        path = ex.images[index]
        kind = _IMAGE_TYPES.get(Path(path).suffix.lower()) if path else None
        if kind is None or not Path(path).is_file():
            raise NotFound(f"item {item_id!r} has no image in the store")
        return FileResponse(path, media_type=kind)

    @app.get("/explorer/store")
    def store_page() -> dict[str, Any]:
        return ex.store_page()

    @app.get("/explorer/metrics.png", include_in_schema=False)
    def metrics_png() -> FileResponse:
        path = store / "model" / "metrics.png"
        if not path.is_file():
            raise NotFound("no training curves: fit writes model/metrics.png")
        return FileResponse(path, media_type="image/png")

    @app.get("/explorer/form")
    def form() -> dict[str, Any]:
        return ex.form()

    @app.post("/explorer/cold")
    def cold_user(body: ColdBody) -> dict[str, Any]:
        if not cold:
            raise UnirecError("new users need the towers: start the server without --no-cold")
        ids, scores = api.recommend(k=min(body.k, rec.n_items), store=store,
                                    user_records=[body.user])
        keep = ~np.isnan(scores[0])
        return {"items": ex.card(rec.item_index(list(ids[0][keep])), scores[0][keep])}

    @app.get("/explain")
    def explain(user: str, item: list[str] = _ITEMS) -> dict[str, Any]:
        if ex.explainer is None:
            raise UnirecError("explanations need the towers: start the server without "
                              "--no-cold")
        from unirec.serve.explain import explain as run

        if int(rec.user_index([user])[0]) < 0:
            raise NotFound(f"user {user!r} is not in the store ({rec.n_users} users)")
        ids = [i for text in item for i in text.split(",") if i]
        try:
            rec.item_index(ids)
        except QueryError as exc:
            raise NotFound(str(exc)) from None
        return {"user": user, "items": run(user, ids, store=store)}
