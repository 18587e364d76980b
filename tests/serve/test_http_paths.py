"""A client never makes the server read a file outside the folders it serves images from;
images can come as base64 bytes instead; ids are matched by type and value."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import serve_on_loopback

from unirec.serve.http import create_app
from unirec.store import Store


@pytest.fixture(scope="module")
def served(fitted_store, tmp_path_factory):
    """(client, input folder, a scratch folder outside it) for a server on loopback."""
    outside = tmp_path_factory.mktemp("outside")
    base = Path(Store(fitted_store).manifest["input"]["path"]).parent
    with serve_on_loopback(create_app(fitted_store), timeout=30) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        yield c, base, outside


def _item(base: Path) -> tuple[dict, str]:
    doc = json.loads((base / "data.json").read_text())
    record = next(r for r in doc["item_data"] if r.get("image"))
    field = next(iter(record["image"]))
    return {k: v for k, v in record.items() if k != "item_id"}, field


def test_outside_paths_devices_fifos_and_escaping_links_are_refused(served) -> None:
    client, base, outside = served
    record, field = _item(base)
    png = base / record["image"][field]
    shutil.copy(png, outside / "elsewhere.png")
    os.mkfifo(outside / "fifo")
    link = base / "images" / "escape.png"
    link.symlink_to(outside / "elsewhere.png")
    os.mkfifo(base / "images" / "inside-fifo")
    try:
        for path, words in [("/etc/passwd", "outside"), ("../../../../etc/passwd", "'..'"),
                            ("images/../../x.png", "'..'"), ("/dev/zero", "outside"),
                            ("/proc/self/environ", "outside"), (str(outside / "fifo"), "outside"),
                            (str(outside / "elsewhere.png"), "outside"),
                            ("images/escape.png", "outside"),
                            ("images/inside-fifo", "not a regular file"), (7, "must be a path")]:
            r = client.post("/similar", json={"item": {**record, "image": {field: path}},
                                              "k": 3})
            assert r.status_code == 400, (path, r.text)
            assert set(r.json()) == {"error"} and words in r.json()["error"], r.json()
    finally:
        link.unlink()
        (base / "images" / "inside-fifo").unlink()


def test_inside_paths_and_base64_bytes_give_the_same_answer(served) -> None:
    client, base, _ = served
    record, field = _item(base)
    by_path = client.post("/similar", json={"item": record, "k": 5})
    assert by_path.status_code == 200, by_path.text
    data = base64.b64encode((base / record["image"][field]).read_bytes()).decode()
    by_bytes = client.post("/similar", json={"item": {**record, "image": {field: {
        "base64": data}}}, "k": 5})
    assert by_bytes.status_code == 200, by_bytes.text
    got, want = by_bytes.json()["items"], by_path.json()["items"]
    assert [i["item_id"] for i in got] == [i["item_id"] for i in want]
    assert np.allclose([i["score"] for i in got], [i["score"] for i in want], atol=1e-5)
    bad = client.post("/similar", json={"item": {**record, "image": {field: {
        "base64": "%%%"}}}, "k": 5})
    assert bad.status_code == 400 and "base64" in bad.json()["error"]


@pytest.mark.parametrize("body", [{"user_id": True}, {"user_id": 1.5}, {"user_id": 1, "k": 2.5},
                                  {"user_id": 1, "k": True}, {"user_id": None}])
def test_ids_and_k_of_the_wrong_type_are_400(served, body) -> None:
    client, _, _ = served
    r = client.post("/recommend", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}


def test_a_huge_numeric_id_is_404_not_500(served) -> None:
    client, _, _ = served
    for user in (str(2**70), "-" + str(2**70), "1e3", " 1"):
        r = client.get("/recommend", params={"user": user})
        assert r.status_code == 404, (user, r.text)
    ok = client.get("/recommend", params={"user": "1", "k": 10**12})
    assert ok.status_code == 200 and ok.json()["items"]
    assert np.isfinite([i["score"] for i in ok.json()["items"]]).all()
