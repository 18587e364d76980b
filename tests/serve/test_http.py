"""The HTTP API over real loopback requests: answers equal the numpy core's, seen items are
left out, and every bad request is a 4xx JSON error, never a 500."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import serve_on_loopback

from unirec.serve.cold import embed_records, record_history_index
from unirec.serve.http import create_app
from unirec.serve.recommender import Recommender
from unirec.store import Store
from unirec.store.csr import csr_from_lists


def _socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets, and without it
    # every loopback answer waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def client(fitted_store):
    """uvicorn serving ``create_app`` in a thread on a free port; an httpx client to it."""
    with serve_on_loopback(create_app(fitted_store), timeout=30) as url, \
            httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def rec(fitted_store) -> Recommender:
    return Recommender.load(fitted_store)


def _expected(rec: Recommender, idx: np.ndarray, scores: np.ndarray) -> list[dict]:
    keep = idx > 0
    idx, scores = idx[keep], scores[keep]
    titles = rec.titles(idx) or [None] * len(idx)
    return [{"item_id": i.item(), "score": float(s), "title": t}
            for i, s, t in zip(rec.item_ids(idx), scores, titles, strict=True)]


def _same(got: list[dict], want: list[dict]) -> None:
    assert [g["item_id"] for g in got] == [w["item_id"] for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want],
                               atol=1e-6)
    assert [g.get("title") for g in got] == [w["title"] for w in want]


def test_health(client, rec) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["cold_start"] is True
    assert (body["users"], body["items"]) == (rec.n_users, rec.n_items)


@pytest.mark.parametrize("user", [1, 17, 150])
def test_recommend_known_user_equals_the_core_and_skips_seen(client, rec, user) -> None:
    r = client.get("/recommend", params={"user": user, "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == user and "fallback" not in body
    idx, scores = rec.recommend_index(rec.user_index([user]), 10, exclude_seen=True)
    _same(body["items"], _expected(rec, idx[0], scores[0]))
    seen = set(rec.item_ids(rec.seen(rec.user_index([user]))[1]).tolist())
    assert seen and not seen & {i["item_id"] for i in body["items"]}
    everything = client.get("/recommend", params={"user": user, "k": rec.n_items,
                                                 "exclude_seen": "false"}).json()["items"]
    assert seen <= {i["item_id"] for i in everything}  # they come back when asked
    post = client.post("/recommend", json={"user_id": user, "k": 10}).json()
    assert post == body


def test_fallback_popular_for_unknown_users(client, rec) -> None:
    r = client.get("/recommend", params={"user": "nobody", "k": 5, "fallback": "popular"})
    assert r.status_code == 200, r.text
    idx, scores = rec.popular(1, 5)
    assert r.json()["fallback"] == "popular"
    _same(r.json()["items"], _expected(rec, idx[0], scores[0]))


def test_cold_user_record(client, rec, fitted_store) -> None:
    items = rec.item_ids(np.arange(1, 6)).tolist()
    record = {"categorical": {"country": "FR"}, "continuous": {"age": 31},
              "history": items}
    r = client.post("/recommend", json={"user": record, "k": 10})
    assert r.status_code == 200, r.text
    vec = embed_records(fitted_store, "user", [record])
    exclude = csr_from_lists(record_history_index(fitted_store, [record]))
    idx, scores = rec.rank(vec, 10, exclude)
    _same(r.json()["items"], _expected(rec, idx[0], scores[0]))
    assert not set(items) & {i["item_id"] for i in r.json()["items"]}


def test_similar_known_and_cold(client, rec, fitted_store) -> None:
    item = rec.item_ids(np.array([3]))[0].item()
    r = client.get("/similar", params={"item": item, "k": 7})
    assert r.status_code == 200, r.text
    idx, scores = rec.rank(rec.items[[3]], 7, skip_self=np.array([3]))
    _same(r.json()["items"], _expected(rec, idx[0], scores[0]))
    assert item not in {i["item_id"] for i in r.json()["items"]}
    doc = json.loads(Path(Store(fitted_store).manifest["input"]["path"]).read_text())
    record = {k: v for k, v in doc["item_data"][2].items() if k != "item_id"}
    cold = client.post("/similar", json={"item": record, "k": 7})
    assert cold.status_code == 200, cold.text
    idx, scores = rec.rank(embed_records(fitted_store, "item", [record]), 7)
    _same(cold.json()["items"], _expected(rec, idx[0], scores[0]))


@pytest.mark.parametrize("method, path, kwargs, status, words", [
    ("GET", "/recommend", {"params": {"user": "nobody"}}, 404, "not in the store"),
    ("GET", "/recommend", {"params": {"user": 1, "k": 0}}, 400, "k: "),
    ("GET", "/recommend", {"params": {"user": 1, "k": "ten"}}, 400, "k: "),
    ("GET", "/recommend", {}, 400, "user: Field required"),
    ("GET", "/recommend", {"params": {"user": 1, "fallback": "random"}}, 400, "fallback"),
    ("GET", "/similar", {"params": {"item": "nope"}}, 404, "not in the catalogue"),
    ("GET", "/nowhere", {}, 404, "Not Found"),
    ("POST", "/recommend", {"content": b'{"user": '}, 400, "malformed JSON"),
    ("POST", "/recommend", {"json": {"k": 3}}, 400, "exactly one of user"),
    ("POST", "/recommend", {"json": {"user_id": 1, "kk": 3}}, 400, "kk: Extra inputs"),
    ("POST", "/recommend", {"json": {"user_id": "nobody"}}, 404, "not in the store"),
    ("POST", "/recommend", {"json": {"user": {"continuous": {"age": "x"}}}}, 400,
     "user record 0: continuous.age: must be a number"),
    ("POST", "/recommend", {"json": {"user": {"history": ["no-such-item"]}}}, 400,
     "history item 'no-such-item'"),
    ("POST", "/recommend", {"json": {"user": "FR"}}, 400, "user: "),
    ("POST", "/recommend", {"json": [1]}, 400, "body"),
    ("POST", "/similar", {"json": {"item": {"colour": 1}}}, 400, "unknown key 'colour'"),
    ("DELETE", "/recommend", {}, 405, "Method Not Allowed"),
])
def test_bad_requests_are_4xx_json(client, method, path, kwargs, status, words) -> None:
    if "content" in kwargs:
        kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and words in r.json()["error"], r.json()


def test_k_beyond_the_catalogue_returns_what_there_is(client, rec) -> None:
    r = client.get("/recommend", params={"user": 1, "k": 10**9})
    assert r.status_code == 200
    seen = len(rec.seen(rec.user_index([1]))[1])
    assert len(r.json()["items"]) == rec.n_items - seen


def test_unirec_serve_command(fitted_store, tmp_path) -> None:
    """The CLI starts the server (towers off: the fast path) and answers on the port."""
    sock = _socket()
    port = sock.getsockname()[1]
    sock.close()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "unirec", "serve", "--store",
                                 str(fitted_store), "--port", str(port), "--no-cold"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert r.json()["cold_start"] is False
        got = httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": 1, "k": 3})
        assert got.status_code == 200 and len(got.json()["items"]) == 3
        cold = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user": {}})
        assert cold.status_code == 400 and "--cold" in cold.json()["error"]
    finally:
        proc.terminate()
        proc.wait(10)
