"""Explanation cost and the explorer's page load, on a fitted store.

Why: explanations must be cheap enough to show for every top-10 (issue 18). Measured in one
child process (one thread, peak RSS is that child's): ``unirec.explain(user, k=10)`` next to
``unirec.recommend(user, 10)`` for the same users, interleaved so both see the same machine;
the figure to trust is the ratio. Then every user's top-10 explained in blocks (what
``recommend --all-users --explain`` computes). The explorer's page load is timed on loopback
against a ``unirec serve`` process: the page's own requests with httpx, and, where Debian's
chromium and Playwright are installed, the real page in headless Chromium (load event, then a
user's view with history, top-10 and explanations on screen).

Usage: python -m bench.explain_speed --store STORE [--queries N]   (serve_speed runs it too)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import last_json, latency_ms, measure, unirec_serve

UNIREC = str(Path(sys.executable).parent / "unirec")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def child(store: str, n: int) -> dict[str, Any]:
    """In process: explain vs recommend per user (top-10), then all users in blocks."""
    import torch

    import unirec
    from unirec.serve.explain import blocks
    from unirec.serve.recommender import Recommender

    torch.set_num_threads(1)
    rec = Recommender.load(store)
    ids = rec.user_ids(np.random.default_rng(0).integers(1, rec.n_users + 1, n))
    t = time.perf_counter()
    unirec.explain(ids[0], k=10, store=store)  # loads the towers once
    load_s = time.perf_counter() - t
    plain, why = [], []
    for uid in ids:
        t = time.perf_counter()
        unirec.recommend(uid, 10, store=store)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        unirec.explain(uid, k=10, store=store)
        why.append(time.perf_counter() - t)
    t = time.perf_counter()
    rows = sum(len(b["user_id"]) for b in blocks(store, 10, 3))
    all_s = time.perf_counter() - t
    out = {"users": rec.n_users, "items": rec.n_items, "towers_load_s": round(load_s, 2),
           "recommend": latency_ms(plain, 2), "explain": latency_ms(why, 2),
           "all_users_s": round(all_s, 2), "all_users_rows": rows,
           "all_users_per_s": round(rec.n_users / all_s, 1)}
    out["per_recommendation_ms"] = round(out["explain"]["p50_ms"] / 10, 2)
    out["explain_over_recommend"] = round(out["explain"]["p50_ms"] /
                                          out["recommend"]["p50_ms"], 1)
    return out


def page_load(store: Path, runs: int = 5) -> dict[str, Any]:
    """Loopback timings of the explorer against a ``unirec serve`` child process."""
    import httpx

    with unirec_serve(store, ONE_THREAD) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        user = client.get("/explorer/users", params={"limit": 1}).json()["users"][0]
        page, view = [], []
        for _ in range(runs):
            t = time.perf_counter()
            for path in ("/", "/static/app.js", "/static/style.css", "/explorer/users"):
                client.get(path).raise_for_status()
            page.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.get("/explorer/user", params={"user": user["user_id"]}).raise_for_status()
            view.append(time.perf_counter() - t)
        out = {"http_page_ms": latency_ms(page, 2), "http_user_view_ms": latency_ms(view, 2)}
        out["browser"] = _browser(base, user["user_id"], runs)
        return out


def _browser(base: str, user: Any, runs: int) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (the browser extra)"}
    if chromium is None:
        return {"skipped": "Debian's chromium is not installed (make browser)"}
    load, view = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(runs):
            page = browser.new_page()
            t = time.perf_counter()
            page.goto(base + "/", wait_until="load")
            page.wait_for_selector("#user-list button")
            load.append(time.perf_counter() - t)
            t = time.perf_counter()
            page.click(f"#user-list button[data-user='{user}']")
            page.wait_for_selector("#recs .card.rec")
            page.wait_for_load_state("networkidle")
            view.append(time.perf_counter() - t)
            page.close()
        browser.close()
    return {"page_load_ms": latency_ms(load, 2), "user_view_ms": latency_ms(view, 2)}


def run(store: Path, quick: bool = False) -> dict[str, Any]:
    """Both measurements, the explanation cost in its own child process."""
    r = measure([sys.executable, "-m", "bench.explain_speed", "--child-store", str(store),
                 "--queries", "50" if quick else "200"], timeout_s=1800, env=ONE_THREAD)
    res = last_json(r.tail) or {"error": r.tail}
    res = {**res, "peak_rss_mb": round(r.peak_rss_mb), "others_cores": r.others_cores}
    try:
        res["page"] = page_load(store, 3 if quick else 5)
    except Exception as exc:  # the explain figures stand without the page figures
        res["page"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    return res


def markdown(res: dict[str, Any]) -> list[str]:
    """Lines for the serving section of docs/benchmarks.md."""
    if "error" in res:
        return ["", f"Explanations: failed\n\n```\n{res['error']}\n```"]
    lines = ["", f"Explanations (`unirec.explain`, top-10, one thread, {res['users']:,} users x "
             f"{res['items']:,} items): p50 **{res['explain']['p50_ms']} ms per user = "
             f"{res['per_recommendation_ms']} ms per recommendation**, p99 "
             f"{res['explain']['p99_ms']} ms; plain `unirec.recommend` on the same users p50 "
             f"{res['recommend']['p50_ms']} ms ({res['explain_over_recommend']}x); towers "
             f"loaded once in {res['towers_load_s']} s; every user explained in blocks: "
             f"{res['all_users_per_s']} users/s; peak RSS {res['peak_rss_mb']} MB."]
    page = res.get("page", {})
    if "skipped" in page:
        lines.append(f"Explorer page: {page['skipped']}.")
    elif page:
        b = page["browser"]
        browser = (f"in headless Chromium: page load p50 **{b['page_load_ms']['p50_ms']} ms**, "
                   f"a user's view (history, top-10, explanations) "
                   f"{b['user_view_ms']['p50_ms']} ms") if "skipped" not in b else b["skipped"]
        lines.append(f"Explorer on loopback: the page's requests p50 "
                     f"{page['http_page_ms']['p50_ms']} ms, a user's view "
                     f"{page['http_user_view_ms']['p50_ms']} ms over HTTP; {browser}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--child-store")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.child_store:
        print(json.dumps(child(args.child_store, args.queries)))
        return 0
    if args.store is None:
        ap.error("give --store (a fitted store)")
    res = run(args.store, args.quick)
    print(json.dumps(res, indent=1))
    print("\n".join(markdown(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
