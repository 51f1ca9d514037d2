"""No client-controlled upstream: nothing a client sends chooses where the gateway connects or which
credentials it sends.

The upstream URL and key of every backend come from the config only. Request fields that steer an
upstream in other gateways and SDKs (``api_base``, ``base_url``, ``api_key``, ``extra_headers``,
``custom_llm_provider``, ``aws_*``, ``vertex_*``, ``azure_*``, ``litellm_*`` ...) are *dropped* from the
body's top level before it goes anywhere (so an upstream that would honour them, such as another
gateway, never sees them); nested values and URL-like vendor extensions are data the gateway never
interprets. Client headers are never forwarded. Redirects are not followed. A trap server whose
address is written into every such field proves that nothing ever connects to it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lm_gateway.api.common import UPSTREAM_FIELDS, drop_upstream_fields
from lm_gateway.config.validate import url_problems

from .conftest import StartGateway
from .fakes.anthropic_backend import AnthropicBackend
from .fakes.base import RecordedRequest
from .fakes.ollama_backend import OllamaBackend
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Status
from .gateway import RunningGateway

OPENAI_KEY = "sk-configured-openai-5d1e"
ANTHROPIC_KEY = "sk-ant-configured-77ab"
CLIENT_KEY = "client-key-that-must-stay-here-2f9c"


class Trap:
    """A TCP listener that only counts connections: any connection means the gateway was steered."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    trap = Trap()
    yield trap
    trap.close()


def steering_fields(url: str) -> dict[str, Any]:
    """Every way we know of to ask a gateway for another upstream or other credentials."""
    return {
        "api_base": url,
        "base_url": url + "/v1",
        "API_BASE": url,
        "api_url": url,
        "api_key": "sk-attacker",
        "api_version": "2099-01-01",
        "api_type": "azure",
        "organization": "org-attacker",
        "custom_llm_provider": "openai",
        "extra_headers": {"Authorization": "Bearer sk-attacker", "Host": "evil.example"},
        "extra_query": {"api-version": "x"},
        "extra_body": {"api_base": url},
        "headers": {"x-api-key": "sk-attacker"},
        "default_headers": {"x-api-key": "sk-attacker"},
        "deployment_id": "x",
        "proxy": url,
        "proxies": {"https": url},
        "http_client": url,
        "model_list": [{"model_name": "x", "litellm_params": {"api_base": url}}],
        "user_config": {"model_list": [{"litellm_params": {"api_base": url}}]},
        "aws_region_name": "us-east-1",
        "aws_bedrock_runtime_endpoint": url,
        "vertex_project": "p",
        "vertex_location": url,
        "vertexai_endpoint": url,
        "azure_endpoint": url,
        "azure_ad_token": "t",
        "litellm_params": {"api_base": url},
        "litellm_metadata": {"api_base": url},
        "gcp_endpoint": url,
        "google_endpoint": url,
    }


def url_like_extensions(url: str) -> dict[str, Any]:
    """Vendor extensions whose values look like URLs: passed on as data, never connected to."""
    return {
        "x-upstream-url": url,
        "callback_url": url,
        "webhook": {"url": url, "headers": {"authorization": "Bearer sk-attacker"}},
        "metadata": {"api_base": url, "note": url},
    }


HOSTILE_HEADERS = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "X-Api-Key": "sk-attacker-x-api-key",
    "Anthropic-Version": "2099-01-01",
    "Anthropic-Beta": "attacker-beta",
    "OpenAI-Organization": "org-attacker",
    "X-Forwarded-Host": "evil.example",
    "X-Upstream": "http://evil.example",
    "X-Custom": "custom",
    "Cookie": "session=attacker",
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[OpenAIBackend, AnthropicBackend, OllamaBackend]]:
    with (
        OpenAIBackend(api_key=OPENAI_KEY) as openai_fake,
        AnthropicBackend(api_key=ANTHROPIC_KEY) as anthropic_fake,
        OllamaBackend() as ollama_fake,
    ):
        yield openai_fake, anthropic_fake, ollama_fake


@pytest.fixture
def gw(
    start_gateway: StartGateway, upstreams: tuple[OpenAIBackend, AnthropicBackend, OllamaBackend]
) -> RunningGateway:
    openai_fake, anthropic_fake, ollama_fake = upstreams
    for fake in upstreams:
        fake.reset()
    body = f"""
        [backends.oa]
        provider = "openai"
        base_url = "{openai_fake.url}"
        api_key_env = "OA_KEY"

        [backends.an]
        provider = "anthropic"
        base_url = "{anthropic_fake.url}"
        api_key_env = "AN_KEY"

        [backends.ol]
        provider = "ollama"
        base_url = "{ollama_fake.url}"

        [[tiers]]
        name = "t:openai"
        backend = "oa"
        model = "configured-openai-model"

        [[tiers]]
        name = "t:anthropic"
        backend = "an"
        model = "configured-anthropic-model"

        [[tiers]]
        name = "t:ollama"
        backend = "ol"
        model = "configured-ollama-model"

        [profiles.default]
        mode = "dispatch"
        classifier = "t:openai"

        [[clients]]
        name = "client"
        key_env = "CLIENT_KEY"
        profile = "default"
        """
    env = {"OA_KEY": OPENAI_KEY, "AN_KEY": ANTHROPIC_KEY, "CLIENT_KEY": CLIENT_KEY}
    return start_gateway(body, env=env)


CALLS = [
    # (client endpoint, tier, extra body, upstream index, upstream path)
    ("/v1/chat/completions", "t:openai", {}, 0, "/v1/chat/completions"),
    ("/v1/chat/completions", "t:openai", {"stream": True}, 0, "/v1/chat/completions"),
    ("/v1/chat/completions", "t:anthropic", {}, 1, "/v1/messages"),
    ("/v1/chat/completions", "t:ollama", {"stream": True}, 2, "/api/chat"),
    ("/v1/completions", "t:openai", {"prompt": "hi"}, 0, "/v1/completions"),
    ("/v1/embeddings", "t:openai", {"input": "hi"}, 0, "/v1/embeddings"),
    ("/v1/messages", "t:anthropic", {"max_tokens": 20}, 1, "/v1/messages"),
    ("/v1/messages", "t:anthropic", {"max_tokens": 20, "stream": True}, 1, "/v1/messages"),
    ("/v1/messages", "t:openai", {"max_tokens": 20}, 0, "/v1/chat/completions"),
    ("/api/chat", "t:ollama", {"stream": False}, 2, "/api/chat"),
    ("/api/chat", "t:anthropic", {"stream": True}, 1, "/v1/messages"),
    ("/api/generate", "t:ollama", {"prompt": "hi", "stream": False}, 2, "/api/generate"),
]


def expected_credentials(index: int, request: RecordedRequest, client_path: str) -> None:
    if index == 0:
        assert request.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert request.header("x-api-key") is None
    elif index == 1:
        assert request.header("x-api-key") == ANTHROPIC_KEY
        assert request.header("authorization") is None
        assert request.header("anthropic-version") == "2023-06-01"
        # The one client header passed on, to an Anthropic tier on the untouched passthrough only: a
        # list of feature names, which can change neither the upstream nor its credentials.
        passthrough = client_path == "/v1/messages"
        assert request.header("anthropic-beta") == ("attacker-beta" if passthrough else None)
    else:
        assert request.header("authorization") is None and request.header("x-api-key") is None


@pytest.mark.parametrize(("path", "tier", "extra", "index", "upstream_path"), CALLS)
def test_steering_fields_and_headers_never_change_the_upstream_or_its_credentials(
    gw: RunningGateway,
    upstreams: tuple[OpenAIBackend, AnthropicBackend, OllamaBackend],
    trap: Trap,
    path: str,
    tier: str,
    extra: dict[str, Any],
    index: int,
    upstream_path: str,
) -> None:
    body: dict[str, Any] = {
        "model": tier,
        "messages": [{"role": "user", "content": f"see {trap.url}/steal and {trap.url}"}],
        **steering_fields(trap.url),
        **url_like_extensions(trap.url),
        **extra,
    }
    if path == "/api/generate":
        body.pop("messages")
    resp = httpx.post(gw.url + path, json=body, headers=HOSTILE_HEADERS, timeout=10)
    assert resp.status_code == 200, resp.text
    fake = upstreams[index]
    (request,) = fake.requests_to(upstream_path)
    assert all(not other.requests for other in upstreams if other is not fake)
    expected_credentials(index, request, path)
    assert request.header("host") == f"127.0.0.1:{fake.port}"
    for name in ("x-forwarded-host", "x-upstream", "x-custom", "cookie", "openai-organization"):
        assert request.header(name) is None, name
    assert CLIENT_KEY not in str(request.headers) and CLIENT_KEY.encode() not in request.body
    sent = request.json
    assert isinstance(sent, dict)
    # Only the vendor extension that carries it as data (passed through to a same-protocol upstream).
    assert "sk-attacker" not in str({k: v for k, v in sent.items() if k != "webhook"})
    steering = {name.lower() for name in steering_fields(trap.url)}
    assert not steering & {name.lower() for name in sent}, sorted(steering & set(sent))
    assert trap.connections == 0


def test_native_passthrough_keeps_url_like_extensions_as_data(
    gw: RunningGateway, upstreams: tuple[OpenAIBackend, AnthropicBackend, OllamaBackend], trap: Trap
) -> None:
    body = {
        "model": "t:openai",
        "messages": [{"role": "user", "content": "x"}],
        **url_like_extensions(trap.url),
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "fetch",
                    "parameters": {"type": "object", "properties": {"api_base": {"type": "string"}}},
                },
            }
        ],
    }
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=HOSTILE_HEADERS)
    assert resp.status_code == 200
    sent = upstreams[0].last_request.json
    assert sent["x-upstream-url"] == trap.url and sent["metadata"]["api_base"] == trap.url
    # A property *named* api_base inside a tool's schema is the client's data, kept as it is.
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"api_base": {"type": "string"}}
    assert trap.connections == 0


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_never_followed(
    gw: RunningGateway,
    upstreams: tuple[OpenAIBackend, AnthropicBackend, OllamaBackend],
    trap: Trap,
    status: int,
) -> None:
    upstreams[0].script(Status(status, headers={"Location": trap.url + "/v1/chat/completions"}))
    body = {"model": "t:openai", "messages": [{"role": "user", "content": "x"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=HOSTILE_HEADERS)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "backend_redirect"
    assert trap.url not in resp.text
    assert trap.connections == 0


def test_dropping_is_top_level_and_case_insensitive() -> None:
    body = {
        "model": "m",
        "API_KEY": "x",
        "Base_Url": "x",
        "aws_secret_access_key": "x",
        "metadata": {"api_base": "kept"},
        "messages": [],
    }
    assert set(drop_upstream_fields(body)) == {"API_KEY", "Base_Url", "aws_secret_access_key"}
    assert body == {"model": "m", "metadata": {"api_base": "kept"}, "messages": []}
    assert drop_upstream_fields(body) == ()


def test_no_protocol_field_is_on_the_drop_list() -> None:
    protocol_fields = {
        # OpenAI chat / completions / embeddings
        "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
        "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
        "top_logprobs", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
        "service_tier", "store", "metadata", "modalities", "audio", "prediction", "reasoning_effort",
        "web_search_options", "prompt", "suffix", "echo", "best_of", "input", "encoding_format",
        "dimensions",
        # Anthropic
        "system", "stop_sequences", "top_k", "thinking", "container", "mcp_servers",
        # Ollama
        "images", "format", "options", "template", "context", "raw", "keep_alive", "think",
        # OpenRouter
        "provider", "transforms", "models", "route", "plugins", "reasoning", "usage",
    }  # fmt: skip
    body = dict.fromkeys(protocol_fields, 1)
    assert drop_upstream_fields(body) == ()
    assert not protocol_fields & UPSTREAM_FIELDS


@pytest.mark.parametrize(
    "url",
    [
        "http://good.example\r\nHost: evil.example",
        "http://good.example\nX-Injected: 1",
        "http://good.example#@evil.example",
        "http://user:pw@good.example",
        "http://good.example@evil.example",
        "http://evil.example\\@good.example",
        "http://good.example\x00.evil.example",
        "http://good.example?@evil.example",
        "http://good%2eexample",
        "http://gооd.example",  # Cyrillic o: a homograph
        "file:///etc/passwd",
        "gopher://good.example:70/",
        "http://:80",
        "http://good.example:99999",
    ],
)
def test_backend_urls_with_tricks_are_refused_without_echoing_them(url: str) -> None:
    problems = url_problems(url)
    assert problems, url
    assert all("evil" not in problem and "pw" not in problem for problem in problems)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:11434", "https://api.openai.com", "http://[::1]:8080", "https://my-host_1.lan/api"],
)
def test_ordinary_backend_urls_pass(url: str) -> None:
    assert url_problems(url) == []
