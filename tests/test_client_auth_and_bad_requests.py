"""Client keys bind profiles and fail closed; malformed, oversized and ill-typed requests get clear
4xx errors in the OpenAI shape; secrets never show up in error bodies or logs."""

from __future__ import annotations

import logging
import re
import socket

import httpx
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Status
from .gateway import RunningGateway, openai_backend_config

CHAT = "/v1/chat/completions"
QUESTION = {"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]}
BACKEND_CANARY = "sk-backend-canary-0c4e1b"
CLIENT_CANARY = "client-canary-key-93aa"
OTHER_CANARY = "client-canary-key-other-11"

CLIENTS = """
[profiles.premium]
mode = "dispatch"
classifier = "cloud:economy"

[[clients]]
name = "team-a"
key_env = "KEY_A"
profile = "default"

[[clients]]
key_env = "KEY_B"
profile = "premium"
"""


@pytest.fixture
def keyed(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    env = {"KEY_A": CLIENT_CANARY, "KEY_B": OTHER_CANARY, "MOCK_KEY": BACKEND_CANARY}
    return start_gateway(openai_backend_config(fake.url, extra='api_key_env = "MOCK_KEY"') + CLIENTS, env=env)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_or_wrong_key_is_401_and_healthz_stays_open(
    keyed: RunningGateway, fake: OpenAIBackend
) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Basic abc"}):
        resp = httpx.post(keyed.url + CHAT, json=QUESTION, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"
        assert resp.headers["www-authenticate"] == 'Bearer realm="lm-gateway"'
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    assert fake.requests_to(CHAT) == []


def test_a_key_binds_its_profile_and_its_name_is_logged_not_its_value(
    keyed: RunningGateway, fake: OpenAIBackend
) -> None:
    resp = httpx.post(keyed.url + CHAT, json=QUESTION, headers=auth(CLIENT_CANARY))
    assert resp.status_code == 200 and resp.headers["x-lmg-profile"] == "default"
    assert fake.last_request.api_key == BACKEND_CANARY  # the gateway's key goes upstream, not the client's
    entry = keyed.traffic()[0]
    assert entry["client"] == "team-a" and entry["profile"] == "default"
    premium = httpx.post(keyed.url + CHAT, json={**QUESTION, "model": "premium"}, headers=auth(OTHER_CANARY))
    assert premium.status_code == 200 and premium.headers["x-lmg-profile"] == "premium"
    assert keyed.traffic()[0]["client"] == "KEY_B"


def test_a_bound_client_cannot_switch_profile_by_naming_it(keyed: RunningGateway) -> None:
    resp = httpx.post(keyed.url + CHAT, json={**QUESTION, "model": "premium"}, headers=auth(CLIENT_CANARY))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "profile_not_allowed"
    models = httpx.get(keyed.url + "/v1/models", headers=auth(CLIENT_CANARY)).json()["data"]
    assert "premium" not in {m["id"] for m in models}


def test_clients_configured_but_no_key_set_refuses_everything(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url) + CLIENTS)
    resp = httpx.post(gw.url + CHAT, json=QUESTION, headers=auth("anything"))
    assert resp.status_code == 401
    assert "none is set" in resp.json()["error"]["message"]
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_public_profile_serves_requests_without_a_key(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url) + CLIENTS,
        env={"KEY_A": CLIENT_CANARY},
        gateway_extra='public_profile = "default"\n',
    )
    resp = httpx.post(gw.url + CHAT, json=QUESTION)
    assert resp.status_code == 200 and resp.headers["x-lmg-profile"] == "default"


def test_duplicate_authorization_headers_are_refused(keyed: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", keyed.gateway.client_port)) as sock:
        body = b'{"model":"hint:fast","messages":[{"role":"user","content":"q"}]}'
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {CLIENT_CANARY}\r\nAuthorization: Bearer wrong\r\n".encode()
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 401")


def test_upstream_errors_never_echo_the_backend_key(keyed: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Status(400, message=f"Incorrect API key provided: {BACKEND_CANARY}"))
    resp = httpx.post(keyed.url + CHAT, json=QUESTION, headers=auth(CLIENT_CANARY))
    assert resp.status_code == 400
    assert BACKEND_CANARY not in resp.text and "***" in resp.text
    traffic = httpx.get(keyed.admin_url + "/admin/traffic").text
    assert BACKEND_CANARY not in traffic and CLIENT_CANARY not in traffic


def test_secrets_never_reach_the_logs(
    keyed: RunningGateway, fake: OpenAIBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(Status(500, message=f"key {BACKEND_CANARY} rejected"))
    httpx.post(keyed.url + CHAT, json=QUESTION, headers=auth(CLIENT_CANARY))
    httpx.post(keyed.url + CHAT, json=QUESTION, headers=auth("wrong-" + CLIENT_CANARY))
    httpx.post(keyed.admin_url + "/admin/reload")
    text = caplog.text + repr(keyed.gateway.state.config)
    for secret in (BACKEND_CANARY, CLIENT_CANARY, OTHER_CANARY):
        assert secret not in text


@pytest.fixture
def gw(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    return start_gateway(openai_backend_config(fake.url), gateway_extra="max_body_bytes = 4096\n")


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "invalid_json"),
        (b'{"model": "hint:fast"}', {"content-type": "application/json"}, 400, "invalid_messages"),
        (b'{"model": "hint:fast", "messages": "hi"}', {}, 400, "invalid_messages"),
        (b'{"model": "hint:fast", "messages": [42]}', {}, 400, "invalid_messages"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "q"}]}', {}, 400, "invalid_model"),
        (
            b'{"model": "hint:fast", "stream": "yes", "messages": [{"role": "user", "content": "q"}]}',
            {},
            400,
            "invalid_stream",
        ),
        (b'{"model": "hint:fast", "messages": []}', {}, 400, "invalid_messages"),
        (b"\xff\xfe{", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"<xml/>", {"content-type": "application/xml"}, 415, "unsupported_media_type"),
        (b'{"model":"' + b"x" * 5000 + b'"}', {"content-type": "application/json"}, 413, "body_too_large"),
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "no-messages",
        "messages-string",
        "message-not-object",
        "model-not-string",
        "stream-not-bool",
        "messages-empty",
        "invalid-utf8",
        "xml",
        "too-large",
    ],
)
def test_bad_requests_get_clear_errors(
    gw: RunningGateway, fake: OpenAIBackend, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    resp = httpx.post(gw.url + CHAT, content=content, headers=headers)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert fake.requests_to(CHAT) == []
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_declared_oversized_body_is_refused_before_it_is_read(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


def test_unknown_path_and_wrong_method(gw: RunningGateway) -> None:
    assert httpx.get(gw.url + "/v1/nothing").status_code == 404
    resp = httpx.get(gw.url + CHAT)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"


def test_garbage_bytes_instead_of_http_get_a_400_and_the_server_keeps_going(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
        sock.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400")
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_keep_alive_and_pipelined_requests_are_answered_in_order(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404", b"200"]


def test_expect_100_continue_is_honoured(gw: RunningGateway) -> None:
    body = b'{"model":"hint:fast","messages":[{"role":"user","content":"q"}]}'
    with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        final = sock.recv(65536)
    assert final.startswith(b"HTTP/1.1 200")
