"""Provider specifics over real sockets: OpenRouter's attribution headers, Ollama through its native
API (``think`` and ``default_options`` only sent there), pooled keep-alive connections, request ids."""

from __future__ import annotations

import httpx

from .conftest import StartGateway
from .fakes.ollama_backend import OllamaBackend
from .fakes.openai_backend import OpenAIBackend

QUESTION = {"model": "t", "messages": [{"role": "user", "content": "q"}]}


def one_tier(provider: str, url: str, extra: str = "", tier_extra: str = "") -> str:
    return f"""
        [backends.b]
        base_url = "{url}"
        provider = "{provider}"
        {extra}

        [[tiers]]
        name = "t"
        backend = "b"
        model = "upstream-model"
        {tier_extra}
        """


def test_openrouter_gets_its_headers_and_the_bearer_key(start_gateway: StartGateway) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(
            one_tier("openrouter", fake.url, 'api_key_env = "OR_KEY"'), env={"OR_KEY": "or-key"}
        )
        assert httpx.post(gw.url + "/v1/chat/completions", json=QUESTION).status_code == 200
        sent = fake.last_request
        assert sent.header("http-referer") and sent.header("x-title") == "lm-gateway"
        assert sent.header("authorization") == "Bearer or-key"


def test_plain_openai_backends_get_no_attribution_headers_and_no_think(start_gateway: StartGateway) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(one_tier("openai", fake.url, tier_extra="think = true"))
        assert httpx.post(gw.url + "/v1/chat/completions", json=QUESTION).status_code == 200
        sent = fake.last_request
        assert sent.header("http-referer") is None and sent.header("authorization") is None
        assert "think" not in sent.json


def test_ollama_is_served_natively_with_think_and_default_options(start_gateway: StartGateway) -> None:
    with OllamaBackend() as fake:
        extra = "default_options = { num_ctx = 16384 }"
        gw = start_gateway(one_tier("ollama", fake.url, extra, tier_extra="think = false"))
        resp = httpx.post(gw.url + "/v1/chat/completions", json={**QUESTION, "temperature": 0.2})
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
        sent = fake.last_request
        assert sent.path == "/api/chat" and sent.json["think"] is False
        assert sent.json["model"] == "upstream-model"
        assert sent.json["options"]["num_ctx"] == 16384 and sent.json["options"]["temperature"] == 0.2
        # A client's own think value is never overridden by the tier default.
        httpx.post(gw.url + "/v1/chat/completions", json={**QUESTION, "think": True})
        assert fake.last_request.json["think"] is True
        health = httpx.get(gw.admin_url + "/admin/backends/health").json()["backends"][0]
        assert health["status"] == "ok" and health["models"] == list(fake.models)
        assert fake.requests_to("/api/tags")


def test_upstream_connections_are_pooled_and_reused(start_gateway: StartGateway) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(one_tier("openai", fake.url))
        with httpx.Client() as client:
            for _ in range(20):
                assert client.post(gw.url + "/v1/chat/completions", json=QUESTION).status_code == 200
        assert len(fake.requests_to("/v1/chat/completions")) == 20
        assert fake.connections_opened == 1


def test_request_id_is_kept_when_sane_and_replaced_when_not(start_gateway: StartGateway) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(one_tier("openai", fake.url))
        ok = httpx.post(
            gw.url + "/v1/chat/completions", json=QUESTION, headers={"X-Request-ID": "trace-123.abc"}
        )
        assert ok.headers["x-request-id"] == "trace-123.abc"
        assert gw.traffic()[0]["id"] == "trace-123.abc"
        odd = httpx.post(gw.url + "/v1/chat/completions", json=QUESTION, headers={"X-Request-ID": "x" * 500})
        assert odd.headers["x-request-id"] != "x" * 500 and len(odd.headers["x-request-id"]) < 64
        ids = {httpx.get(gw.url + "/v1/nope").headers["x-request-id"] for _ in range(5)}
        assert len(ids) == 5
