"""The dashboard's server side over real sockets: its files, the live traffic feed (SSE), the stats
behind the ladder and charts, probes, and what may and may not reach the admin API from a browser."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status
from .gateway import RunningGateway, admin_token_gateway, openai_backend_config

TOKEN = "feed-admin-token-3b9f"
STATIC = Path(__file__).resolve().parent.parent / "src" / "lm_gateway" / "api" / "static"


def chat(gw: RunningGateway, model: str, *, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs from an SSE response, as a browser's parser would see them."""
    name, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield name, orjson.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def next_event(events: Iterator[tuple[str, Any]], wanted: str) -> Any:
    for name, data in events:
        if name == wanted:
            return data
    raise AssertionError(f"the feed ended before a '{wanted}' event")


def test_feed_sends_a_snapshot_then_each_entry_live_then_stats(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    assert chat(gw, "hint:fast") == 200
    with httpx.stream("GET", gw.admin_url + "/admin/traffic/stream", timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["cache-control"] == "no-store"
        events = sse_events(resp)
        snapshot = next_event(events, "snapshot")
        assert [e["requested_model"] for e in snapshot["entries"]] == ["hint:fast"]
        first_stats = next_event(events, "stats")  # sent with the snapshot
        assert first_stats["totals"]["total"] == 1

        fake.script(Status(500))
        assert chat(gw, "hint:cloud") == 502
        live = next_event(events, "entries")["entries"]
        assert [(e["requested_model"], e["status"], e["tier"]) for e in live] == [
            ("hint:cloud", 502, "cloud:economy")
        ]
        assert "HTTP 500" in live[0]["error"]
        assert live[0]["route_text"].startswith("dispatch")  # the X-LMG-Route content, for the detail view
        started = time.monotonic()
        stats = next_event(events, "stats")
        assert time.monotonic() - started < 1.5  # figures follow new traffic quickly
        assert stats["totals"]["total"] == 2 and stats["totals"]["errors"] == 1


def test_feed_backlog_is_bounded_and_validated(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    for _ in range(3):
        chat(gw, "hint:fast")
    with httpx.stream("GET", gw.admin_url + "/admin/traffic/stream?backlog=2", timeout=10) as resp:
        assert len(next_event(sse_events(resp), "snapshot")["entries"]) == 2
    bad = httpx.get(gw.admin_url + "/admin/traffic/stream?backlog=x")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_backlog"


def test_an_open_feed_does_not_hold_up_shutdown(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="drain_timeout_ms = 8000\n")
    with httpx.stream("GET", gw.admin_url + "/admin/traffic/stream", timeout=10) as resp:
        events = sse_events(resp)
        next_event(events, "snapshot")
        started = time.monotonic()
        gw.stop()
        assert time.monotonic() - started < 2.0
        assert list(events) is not None  # the stream ended cleanly
    assert gw.thread.leftover_tasks == 0


def test_a_rotated_admin_token_ends_open_feeds(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = admin_token_gateway(start_gateway, fake.url, TOKEN)
    old = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("GET", gw.admin_url + "/admin/traffic/stream", headers=old, timeout=10) as resp:
        events = sse_events(resp)
        next_event(events, "snapshot")
        gw.env["ADMIN_TOKEN"] = "rotated-token"
        assert httpx.post(gw.admin_url + "/admin/reload", headers=old).status_code == 200
        for _ in events:  # ends instead of streaming on under the revoked token
            pass
    assert httpx.get(gw.admin_url + "/admin/stats", headers=old).status_code == 401


def test_feeds_are_limited(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    from lm_gateway.api.admin import MAX_FEEDS

    gw = start_gateway(openai_backend_config(fake.url))
    with contextlib.ExitStack() as stack:
        for _ in range(MAX_FEEDS):
            client = stack.enter_context(httpx.Client(timeout=10))
            feed = stack.enter_context(client.stream("GET", gw.admin_url + "/admin/traffic/stream"))
            assert feed.status_code == 200
        refused = httpx.get(gw.admin_url + "/admin/traffic/stream")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "busy"


def test_page_and_files_load_without_the_token_but_data_needs_it(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = admin_token_gateway(start_gateway, fake.url, TOKEN)
    page = httpx.get(gw.admin_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "app.css", "charts.js"):
        asset = httpx.get(f"{gw.admin_url}/static/{name}")
        assert asset.status_code == 200 and asset.content == (STATIC / name).read_bytes()
    assert httpx.get(gw.admin_url + "/static/secrets.txt").status_code == 404
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/admin/traffic/stream", "/admin/stats", "/metrics", "/admin"):
        assert httpx.get(gw.admin_url + path).status_code == 401, path
        with httpx.stream("GET", gw.admin_url + path, headers=auth, timeout=10) as ok:
            assert ok.status_code == 200, path


def test_cross_site_browser_calls_are_refused(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    resp = httpx.post(gw.admin_url + "/admin/reload", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "cross_site"
    same = httpx.get(gw.admin_url + "/admin/stats", headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


def test_stats_give_the_ladder_backends_and_series(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    body = openai_backend_config(fake.url).replace(
        '"hint:fast" = "local:fast"', '"hint:fast" = "local:fast"\n"quick" = "local:fast"'
    )
    gw = start_gateway(body)
    fake.script(Reply(text="one two three"), Reply(text="a"), Status(503))
    assert [chat(gw, "hint:fast"), chat(gw, "hint:fast"), chat(gw, "hint:cloud"), chat(gw, "nope")] == [
        200,
        200,
        503,
        404,
    ]
    stats = httpx.get(gw.admin_url + "/admin/stats").json()
    ladder = {tier["tier"]: tier for tier in stats["ladder"]}
    assert list(ladder) == ["local:fast", "cloud:economy"]
    fast, cloud = ladder["local:fast"], ladder["cloud:economy"]
    assert (fast["index"], fast["backend"], fast["model"]) == (0, "mock", "fast-model")
    assert fast["aliases"] == ["hint:fast", "quick"]
    assert fast["profiles"] == [{"profile": "default", "role": "classifier"}]
    assert (fast["requests"], fast["errors"], cloud["requests"], cloud["errors"]) == (2, 0, 1, 1)
    assert fast["p50_ms"] is not None and fast["p95_ms"] >= fast["p50_ms"]
    assert fast["completion_tokens"] == 4
    assert stats["other_routes"] == [pytest.approx({**stats["other_routes"][0], "tier": "", "requests": 1})]
    assert stats["totals"]["total"] == 4 and stats["totals"]["errors"] == 2
    [backend] = stats["backends"]
    assert (backend["backend"], backend["requests"], backend["errors"], backend["probe"]) == (
        "mock",
        3,
        1,
        None,
    )
    series = stats["series"]
    assert len(series) == 15 * 60 // stats["slot_secs"]
    assert sum(p["errors"] for p in series) == 2
    assert series[-1]["rps"] > 0 and series[0]["p50_ms"] is None

    probed = httpx.get(gw.admin_url + "/admin/backends/health?backend=mock")
    assert probed.status_code == 200 and [b["backend"] for b in probed.json()["backends"]] == ["mock"]
    after = httpx.get(gw.admin_url + "/admin/stats").json()
    assert after["backends"][0]["probe"]["ok"] is True
    assert httpx.get(gw.admin_url + "/admin/backends/health?backend=nope").status_code == 404


def test_dashboard_code_never_turns_text_into_markup() -> None:
    """Everything shown goes through textContent (see app.js's el()); nothing parses HTML."""
    for name in ("app.js", "charts.js"):
        source = (STATIC / name).read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in source, f"{name} uses {sink}"
    page = (STATIC / "index.html").read_text()
    assert "<script>" not in page and "style=" not in page  # the page's policy allows neither
