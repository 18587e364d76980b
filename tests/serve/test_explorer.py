"""The explorer's routes over real loopback requests: the page and its assets ship in the
package, answers equal the JSON API's numpy path, images are served by item id only (never
by a path the client names), and errors are 4xx JSON."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import serve_on_loopback

from unirec.serve import api
from unirec.serve.explain import explain
from unirec.serve.http import create_app
from unirec.store import Store

STATIC = Path(__file__).parents[2] / "unirec" / "serve" / "static"


@pytest.fixture(scope="module")
def client(fitted_store):
    with serve_on_loopback(create_app(fitted_store)) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        yield c


def test_page_and_assets_ship_in_the_package(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, nothing external
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert r.text == (STATIC / name).read_text()
    for bad in ("/static/index.html.bak", "/static/..%2F..%2Fhttp.py", "/static/%2Fetc%2Fpasswd"):
        r = client.get(bad)
        assert r.status_code == 404 and "error" in r.json()


def test_images_by_item_id_only(client, fitted_store) -> None:
    st = Store(fitted_store)
    row = st.sql("SELECT f.item_id, e.path FROM item_features f JOIN image_embeddings e "
                 'ON e.image_index = f."image.main_image" WHERE NOT e.missing LIMIT 1').row(0)
    r = client.get(f"/explorer/image/{row[0]}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == Path(row[1]).read_bytes()
    for bad in ("999999", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        r = client.get(f"/explorer/image/{bad}")
        assert r.status_code == 404, (bad, r.status_code)
        assert "/etc" not in r.text or "not in the catalogue" in r.text


def test_user_view_is_the_api_answer_with_explanations(client, fitted_store) -> None:
    body = client.get("/explorer/user", params={"user": 17, "k": 10}).json()
    ids, scores = api.recommend(17, 10, store=fitted_store)
    assert [i["item_id"] for i in body["items"]] == ids.tolist()
    np.testing.assert_allclose([i["score"] for i in body["items"]], scores, atol=1e-6)
    assert body["profile"]["categorical"]["occupation"]
    assert body["history"] and all(h["title"] and h["image"] for h in body["history"])
    assert all(i["image"].endswith(f"/{i['item_id']}") for i in body["items"])
    assert body["explanations"] is True
    want = explain(17, k=10, store=fitted_store)
    got = [i["explanation"] for i in body["items"]]
    assert [g["item_id"] for g in got] == [w["item_id"] for w in want]
    np.testing.assert_allclose([g["baseline"] for g in got], [w["baseline"] for w in want],
                               atol=1e-6)
    assert got[0]["history"][0]["item_id"] == want[0]["history"][0]["item_id"]
    r = client.get("/explain", params={"user": 17, "item": f"{ids[3]},{ids[0]}"})
    assert r.status_code == 200, r.text
    assert [i["rank"] for i in r.json()["items"]] == [4, 1]


def test_item_store_form_and_cold_start(client, fitted_store) -> None:
    item = client.get("/explorer/item", params={"item": 5, "k": 4}).json()
    ids, _ = api.similar(5, 4, store=fitted_store)
    assert [s["item_id"] for s in item["similar"]] == ids.tolist()
    assert item["record"]["categorical"]["category"]
    store = client.get("/explorer/store").json()
    counts = {t["table"]: t["rows"] for t in store["tables"]}
    assert counts["interactions"] == 9000 and counts["user_embeddings"] == 300
    assert store["plot"] and len(store["metrics"]) == 3 and "train_loss" in store["metrics"][0]
    png = client.get("/explorer/metrics.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    form = client.get("/explorer/form").json()
    fields = {f["field"]: f for f in form["fields"]}
    assert "engineer" in fields["occupation"]["choices"] and fields["age"]["default"] > 18
    user = {"categorical": {"occupation": "engineer"}, "continuous": {"age": 30},
            "history": [3, 5]}
    cold = client.post("/explorer/cold", json={"user": user, "k": 10}).json()
    plain = client.post("/recommend", json={"user": user, "k": 10}).json()
    assert [i["item_id"] for i in cold["items"]] == [i["item_id"] for i in plain["items"]]
    assert len(cold["items"]) == 10 and 3 not in [i["item_id"] for i in cold["items"]]


@pytest.mark.parametrize("method, url, body, status", [
    ("get", "/explorer/user?user=nobody", None, 404),
    ("get", "/explorer/item?item=nobody", None, 404),
    ("get", "/explain?user=17&item=nobody", None, 404),
    ("get", "/explain?user=nobody&item=5", None, 404),
    ("get", "/explorer/user?user=17&k=0", None, 400),
    ("post", "/explorer/cold", {"user": {"history": ["nobody"]}}, 400),
    ("post", "/explorer/cold", {"user": {}, "extra": 1}, 400),
])
def test_bad_requests_are_4xx_json(client, method, url, body, status) -> None:
    r = client.request(method.upper(), url, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] and "\n" not in r.json()["error"]


def test_without_the_towers_the_page_still_works(fitted_store) -> None:
    with serve_on_loopback(create_app(fitted_store, cold=False)) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        body = c.get("/explorer/user", params={"user": 17}).json()
        assert body["explanations"] is False and len(body["items"]) == 10
        assert "explanation" not in body["items"][0]
        r = c.get("/explain", params={"user": 17, "item": 5})
        assert r.status_code == 400 and "--no-cold" in r.json()["error"]
        assert c.get("/explorer/form").json()["cold_start"] is False
