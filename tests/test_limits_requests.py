"""Request limits: JSON nesting depth, number of messages, header size (huge Authorization values
included) and the client port's timeouts, all configurable, each refused with a clear 4xx in the
protocol's error shape before anything reaches a backend."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_gateway.api.common import BodyLimits, json_depth_exceeds
from lm_gateway.config import ConfigError, load_config_text

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .gateway import RunningGateway, openai_backend_config

CHAT = "/v1/chat/completions"
QUESTION = {"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]}


def nested(depth: int) -> object:
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def depth_of(value: object) -> int:
    """The reference: nesting depth by walking the parsed value."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("depth", [1, 5, 63, 64, 65, 200])
def test_nesting_depth_is_measured_exactly(depth: int) -> None:
    raw = orjson.dumps(nested(depth))
    assert json_depth_exceeds(raw, 64) is (depth > 64)
    assert json_depth_exceeds(raw, depth) is False
    assert json_depth_exceeds(raw, depth - 1) is True


# Strings full of what could fool a byte-level count: brackets, quotes, backslashes, escapes.
tricky_text = st.text(alphabet='[]{}"\\\n\t ax:,', max_size=12)
tricky_json = st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, database=None)
@given(value=tricky_json)
def test_depth_on_the_bytes_matches_a_walk_of_the_value(value: object) -> None:
    raw = orjson.dumps(value)
    depth = depth_of(value)
    for limit in {max(depth - 1, 0), depth, depth + 1}:
        assert json_depth_exceeds(raw, limit) is (depth > limit), (raw, depth, limit)


def test_default_body_limits_are_documented_values() -> None:
    limits = BodyLimits()
    assert (limits.max_depth, limits.max_messages) == (64, 10_000)


@pytest.fixture
def gw(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    extra = "max_json_depth = 16\nmax_messages = 5\nmax_header_bytes = 4096\n"
    return start_gateway(openai_backend_config(fake.url), gateway_extra=extra)


def deep_question(depth: int) -> dict[str, object]:
    # The body is the first level, its metadata value the next ones.
    return {**QUESTION, "metadata": nested(depth - 1)}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {}),
        ("/v1/messages", {"max_tokens": 5}),
        ("/api/chat", {"stream": False}),
        ("/v1/embeddings", {"input": "x"}),
    ],
)
def test_too_deep_bodies_are_refused_in_the_protocol_shape(
    gw: RunningGateway, fake: OpenAIBackend, path: str, body: dict[str, object]
) -> None:
    assert httpx.post(gw.url + path, json={**deep_question(16), **body}).status_code == 200
    resp = httpx.post(gw.url + path, json={**deep_question(17), **body})
    assert resp.status_code == 400, resp.text
    assert "deeper than 16" in resp.text
    assert len(fake.requests) == 1


def test_nesting_beyond_the_parser_limit_is_a_400_not_a_crash(gw: RunningGateway) -> None:
    body = b'{"model": "hint:fast", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    resp = httpx.post(gw.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "json_too_deep"


def test_too_many_messages_are_refused(gw: RunningGateway, fake: OpenAIBackend) -> None:
    five = [{"role": "user", "content": str(i)} for i in range(5)]
    assert httpx.post(gw.url + CHAT, json={**QUESTION, "messages": five}).status_code == 200
    resp = httpx.post(gw.url + CHAT, json={**QUESTION, "messages": [*five, five[0]]})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "too_many_messages"
    ollama = httpx.post(gw.url + "/api/chat", json={**QUESTION, "messages": [*five, five[0]]})
    assert ollama.status_code == 400 and "at most 5" in ollama.json()["error"]
    assert len(fake.requests_to(CHAT)) == 1


@pytest.mark.parametrize("header", ["authorization", "x-api-key", "x-whatever"])
def test_huge_headers_are_refused_with_431(gw: RunningGateway, header: str) -> None:
    value = "Bearer " + "k" * 5000 if header == "authorization" else "v" * 5000
    resp = httpx.post(gw.url + CHAT, json=QUESTION, headers={header: value})
    assert resp.status_code == 431
    assert resp.json()["error"]["code"] == "headers_too_large"
    assert "k" * 100 not in resp.text
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_many_small_headers_count_toward_the_limit(gw: RunningGateway) -> None:
    headers = [(f"x-h{i}", "v" * 20) for i in range(300)]
    assert httpx.post(gw.url + CHAT, json=QUESTION, headers=headers).status_code == 431


def test_header_and_idle_timeouts_are_configurable(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url), gateway_extra="header_timeout_ms = 300\nidle_timeout_ms = 400\n"
    )
    port = gw.gateway.client_port
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        slow.settimeout(5)
        assert slow.recv(1024) == b""  # closed without an answer
        assert 0.2 < time.monotonic() - started < 2
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(5)
        assert idle.recv(1024).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert idle.recv(1024) == b""  # the keep-alive connection is closed once idle
        assert 0.3 < time.monotonic() - started < 2


def test_a_reload_applies_new_server_limits_to_open_connections(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="max_header_bytes = 4096\n")
    with httpx.Client(base_url=gw.url) as client:
        big = {"x-big": "v" * 6000}
        assert client.get("/healthz", headers=big).status_code == 431
        text = gw.config_path.read_text().replace("max_header_bytes = 4096", "max_header_bytes = 16384")
        gw.config_path.write_text(text)
        assert httpx.post(gw.admin_url + "/admin/reload").json()["status"] == "reloaded"
        assert client.get("/healthz", headers=big).status_code == 200
        depth = orjson.loads(orjson.dumps(gw.admin_get("/admin/config")))["gateway"]["max_header_bytes"]
        assert depth == 16384


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_json_depth = 1", "gateway.max_json_depth: must be between 2 and 1000, got 1"),
        ("max_json_depth = 5000", "gateway.max_json_depth: must be between 2 and 1000, got 5000"),
        ("max_messages = 0", "gateway.max_messages: must be at least 1, got 0"),
        ("max_header_bytes = 100", "gateway.max_header_bytes: must be at least 1024, got 100"),
        ("header_timeout_ms = 0", "gateway.header_timeout_ms: must be at least 1, got 0"),
        ("idle_timeout_ms = 0", "gateway.idle_timeout_ms: must be at least 1, got 0"),
        ("watch_interval_ms = 10", "gateway.watch_interval_ms: must be at least 100, got 10"),
        (
            'trusted_proxies = ["10.0.0.0/8", "proxy.lan"]',
            "gateway.trusted_proxies[1]: 'proxy.lan' is not an IP",
        ),
        ("watch_config = 1", "gateway.watch_config: expected a boolean"),
    ],
)
def test_the_new_gateway_keys_are_validated(line: str, problem: str) -> None:
    text = f'[gateway]\n{line}\n[backends.d]\nprovider = "demo"\nbase_url = "http://d.invalid"\n'
    text += '[[tiers]]\nname = "t"\nbackend = "d"\nmodel = "m"\n[profiles.default]\nclassifier = "t"\n'
    with pytest.raises(ConfigError) as err:
        load_config_text(text, env={})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("client", "problem"),
    [
        ("rate_limit_rpm = -1", "clients[0].rate_limit_rpm: must be at least 0"),
        ("max_concurrent_streams = 0", "clients[0].max_concurrent_streams: must be at least 1"),
    ],
)
def test_the_new_client_keys_are_validated(client: str, problem: str) -> None:
    text = '[backends.d]\nprovider = "demo"\nbase_url = "http://d.invalid"\n'
    text += '[[tiers]]\nname = "t"\nbackend = "d"\nmodel = "m"\n[profiles.default]\nclassifier = "t"\n'
    text += f'[[clients]]\nkey_env = "K"\nprofile = "default"\n{client}\n'
    with pytest.raises(ConfigError) as err:
        load_config_text(text, env={"K": "k"})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_clients_sharing_a_name_cannot_have_separate_limits() -> None:
    text = '[backends.d]\nprovider = "demo"\nbase_url = "http://d.invalid"\n'
    text += '[[tiers]]\nname = "t"\nbackend = "d"\nmodel = "m"\n[profiles.default]\nclassifier = "t"\n'
    for env in ("A", "B"):
        text += f'[[clients]]\nname = "app"\nkey_env = "{env}"\nprofile = "default"\nrate_limit_rpm = 60\n'
    with pytest.raises(ConfigError) as err:
        load_config_text(text, env={"A": "a", "B": "b"})
    assert any("clients[1].name" in p and "its own name" in p for p in err.value.problems)
