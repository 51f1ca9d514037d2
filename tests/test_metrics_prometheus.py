"""``GET /metrics`` over real sockets: the output parses with prometheus-client's own parser, and its
counters and histograms match the traffic that was actually sent (failures included)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status, Stream
from .gateway import RunningGateway, openai_backend_config

# A backend name a Prometheus label must escape: quotes, a backslash and a newline (a TOML quoted key).
AWKWARD_NAME = 'say "hi" \\ back\nslash'
AWKWARD_TOML = '"say \\"hi\\" \\\\ back\\nslash"'


def chat(gw: RunningGateway, model: str, *, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code


def scrape(gw: RunningGateway) -> list[Sample]:
    resp = httpx.get(gw.admin_url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [sample for family in text_string_to_metric_families(resp.text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def by_labels(samples: list[Sample], name: str) -> dict[tuple[Any, ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples if s.name == name}


def test_counters_and_histograms_match_the_traffic_sent(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Reply(text="one two"), Reply(text="three"), Status(500), Reply(text="a b c"))
    sent = [chat(gw, "hint:fast"), chat(gw, "hint:cloud"), chat(gw, "hint:cloud"), chat(gw, "nope")]
    sent.append(chat(gw, "hint:fast", stream=True))
    assert sent == [200, 200, 502, 404, 200]
    samples = scrape(gw)

    requests = by_labels(samples, "lmg_requests_total")
    route = {"profile": "default", "backend": "mock"}
    assert requests == {
        tuple(sorted({**route, "tier": "local:fast", "status": "200"}.items())): 2.0,
        tuple(sorted({**route, "tier": "cloud:economy", "status": "200"}.items())): 1.0,
        tuple(sorted({**route, "tier": "cloud:economy", "status": "502"}.items())): 1.0,
        tuple(sorted({"profile": "default", "backend": "", "tier": "", "status": "404"}.items())): 1.0,
    }
    assert sum(requests.values()) == len(gw.traffic())

    fast = {"tier": "local:fast", "backend": "mock"}
    cloud = {"tier": "cloud:economy", "backend": "mock"}
    unrouted = {"tier": "", "backend": ""}
    assert value(samples, "lmg_request_errors_total", **fast) == 0
    assert value(samples, "lmg_request_errors_total", **cloud) == 1
    assert value(samples, "lmg_request_errors_total", **unrouted) == 1
    assert value(samples, "lmg_request_duration_seconds_count", **fast) == 2
    assert value(samples, "lmg_request_duration_seconds_bucket", **fast, le="+Inf") == 2
    assert value(samples, "lmg_time_to_first_token_seconds_count", **fast) == 1  # the one stream
    assert not [
        s
        for s in samples
        if s.name.startswith("lmg_time_to_first_token") and s.labels.get("tier") == "cloud:economy"
    ]

    entries = gw.traffic()
    for labels, tier in ((fast, "local:fast"), (cloud, "cloud:economy")):
        for kind in ("prompt", "completion"):
            expected = sum(e[f"{kind}_tokens"] or 0 for e in entries if e["tier"] == tier)
            assert value(samples, "lmg_tokens_total", **labels, kind=kind) == expected
    assert value(samples, "lmg_cost_usd_total", **fast) == 0

    assert value(samples, "lmg_in_flight_requests") == 0
    assert value(samples, "lmg_in_flight_streams") == 0
    assert value(samples, "lmg_build_info", version="0.1.0") == 1
    names = {s.name for s in samples}
    assert "lmg_uptime_seconds" in names


def test_histogram_buckets_are_cumulative_and_sum_the_latencies(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Reply(text="x", delay=0.0), Reply(text="y"), Reply(text="z"))
    for _ in range(3):
        assert chat(gw, "hint:fast") == 200
    samples = scrape(gw)
    buckets = [s for s in samples if s.name == "lmg_request_duration_seconds_bucket"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == 3
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    total_ms = sum(e["latency_ms"] for e in gw.traffic())
    assert value(
        samples, "lmg_request_duration_seconds_sum", tier="local:fast", backend="mock"
    ) == pytest.approx(total_ms / 1000)


def test_label_values_are_escaped(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    body = openai_backend_config(fake.url).replace("[backends.mock]", f"[backends.{AWKWARD_TOML}]")
    gw = start_gateway(body.replace('backend = "mock"', f"backend = {AWKWARD_TOML}"))
    assert chat(gw, "hint:fast") == 200
    text = httpx.get(gw.admin_url + "/metrics").text
    assert 'backend="say \\"hi\\" \\\\ back\\nslash"' in text
    samples = scrape(gw)
    assert value(samples, "lmg_request_errors_total", tier="local:fast", backend=AWKWARD_NAME) == 0


def test_in_flight_gauges_count_open_streams(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Stream(chunks=["slow ", "stream ", "ends"], delay=0.4))
    body = {"model": "hint:fast", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        chunks = resp.iter_raw()
        next(chunks)  # the stream has started
        samples = scrape(gw)
        assert value(samples, "lmg_in_flight_streams") == 1
        assert value(samples, "lmg_in_flight_requests") == 1
        assert b"[DONE]" in b"".join(chunks)
    samples = scrape(gw)
    assert value(samples, "lmg_in_flight_streams") == 0
    assert value(samples, "lmg_in_flight_requests") == 0
    assert value(samples, "lmg_time_to_first_token_seconds_count", tier="local:fast", backend="mock") == 1


def test_probe_results_are_gauges(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    assert not [s for s in scrape(gw) if s.name == "lmg_backend_probe_up"]  # nothing probed yet
    assert httpx.get(gw.admin_url + "/admin/backends/health").status_code == 200
    assert value(scrape(gw), "lmg_backend_probe_up", backend="mock") == 1
