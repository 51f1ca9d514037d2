"""``GET /status`` on the client port: public (no client key), counters only, and never a tier,
backend, model, profile, client or secret name."""

from __future__ import annotations

import httpx
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Status
from .gateway import openai_backend_config

CLIENT_KEY = "status-client-key-41aa"
NAMES = (
    "local:fast",
    "cloud:economy",
    "fast-model",
    "economy-model",
    "mock",
    "hint:",
    "default",
    "CLIENT_KEY",
)


def test_status_is_public_counts_traffic_and_names_nothing(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url) + '\n[[clients]]\nkey_env = "CLIENT_KEY"\nprofile = "default"\n',
        env={"CLIENT_KEY": CLIENT_KEY},
    )
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "hint:fast", "messages": [{"role": "user", "content": "x"}]}
    fake.script(Status(500))
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth).status_code == 502
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth).status_code == 200
    assert httpx.post(gw.url + "/v1/chat/completions", json=body).status_code == 401  # no key: recorded too

    resp = httpx.get(gw.url + "/status")  # no client key
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    status = resp.json()
    assert status["status"] == "ok" and status["ready"] is True
    assert isinstance(status["uptime_secs"], int)
    requests = status["requests"]
    assert (requests["total"], requests["errors"], requests["escalations"]) == (3, 2, 0)
    assert requests["error_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert requests["avg_latency_ms"] > 0
    for name in NAMES:
        assert name not in resp.text, name
    assert httpx.head(gw.url + "/status").status_code == 200
    assert httpx.post(gw.url + "/status").status_code == 405
    assert httpx.get(gw.admin_url + "/status").status_code == 404  # client port only


def test_status_when_not_ready_gives_a_hint_without_names(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url, extra='api_key_env = "SECRET_BACKEND_KEY"'))
    status = httpx.get(gw.url + "/status").json()
    assert status["ready"] is False and "setup" in status
    assert status["requests"] == {
        "total": 0,
        "errors": 0,
        "error_rate": 0.0,
        "escalations": 0,
        "avg_latency_ms": 0.0,
    }
    text = httpx.get(gw.url + "/status").text
    assert "SECRET_BACKEND_KEY" not in text and "mock" not in text
