"""The admin API over real sockets: health, traffic, redacted config, backend probes, reload, token."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx

from lm_gateway.api.auth import ADMIN_FAILURES, FailedAdminAttempts

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Hang, Reply, Status
from .gateway import admin_token_gateway, config_text, openai_backend_config

CANARY_KEY = "sk-canary-backend-7f3a9c"
CANARY_TOKEN = "admin-canary-token-51d2"


def test_health_reports_counts_and_readiness(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url, extra='api_key_env = "MOCK_KEY"'))
    health = gw.admin_get("/admin/health")
    assert health["status"] == "ok"
    assert (health["tiers"], health["backends"]) == (2, 1)
    assert health["ready"] is False
    assert any("MOCK_KEY" in m for m in health["missing_secrets"])
    ready = start_gateway(
        openai_backend_config(fake.url, extra='api_key_env = "MOCK_KEY"'), env={"MOCK_KEY": "k"}
    )
    assert ready.admin_get("/admin/health")["ready"] is True


def test_traffic_is_newest_first_records_failures_and_validates_limit(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Reply(text="one"), Status(500))
    for model in ("hint:fast", "hint:cloud", "nope"):
        httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        )
    payload = gw.admin_get("/admin/traffic?limit=2")
    entries = payload["entries"]
    assert [e["requested_model"] for e in entries] == ["nope", "hint:cloud"]
    assert [e["status"] for e in entries] == [404, 502]
    stats = payload["stats"]
    assert stats["total_requests"] == 3 and stats["error_count"] == 2
    assert stats["tier_counts"] == {"local:fast": 1, "cloud:economy": 1}
    assert stats["window"]["latency_ms"]["p50"] is not None
    for bad in ("abc", "-1", "1.5"):
        resp = httpx.get(gw.admin_url + f"/admin/traffic?limit={bad}")
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "invalid_limit"


def test_traffic_ring_is_bounded_by_capacity(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="traffic_log_capacity = 3\n")
    for i in range(5):
        httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": f"m{i}", "messages": [{"role": "user", "content": "x"}]},
        )
    payload = gw.admin_get("/admin/traffic?limit=100")
    assert [e["requested_model"] for e in payload["entries"]] == ["m4", "m3", "m2"]
    assert payload["stats"]["total_requests"] == 5


def test_config_view_redacts_every_secret(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url, extra='api_key_env = "MOCK_KEY"')
        + '\n[[clients]]\nkey_env = "CLIENT_KEY"\nprofile = "default"\n',
        env={"MOCK_KEY": CANARY_KEY, "CLIENT_KEY": "client-canary-99", "ADMIN_TOKEN": CANARY_TOKEN},
        gateway_extra='admin_token_env = "ADMIN_TOKEN"\n',
    )
    resp = httpx.get(gw.admin_url + "/admin/config", headers={"Authorization": f"Bearer {CANARY_TOKEN}"})
    assert resp.status_code == 200
    text = resp.text
    for secret in (CANARY_KEY, "client-canary-99", CANARY_TOKEN):
        assert secret not in text
    view = resp.json()
    backend = view["backends"][0]
    assert backend["has_api_key"] is True and backend["api_key_env"] == "MOCK_KEY"
    assert [t["name"] for t in view["tiers"]] == ["local:fast", "cloud:economy"]


def test_admin_token_is_required_when_configured(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = admin_token_gateway(start_gateway, fake.url, CANARY_TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {CANARY_TOKEN}"}):
        resp = httpx.get(gw.admin_url + "/admin/health", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["error"]["type"] == "authentication_error"
    ok = httpx.get(gw.admin_url + "/admin/health", headers={"Authorization": f"Bearer {CANARY_TOKEN}"})
    assert ok.status_code == 200


def test_wrong_admin_tokens_lock_the_address_out(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = admin_token_gateway(start_gateway, fake.url, CANARY_TOKEN)
    right = {"Authorization": f"Bearer {CANARY_TOKEN}"}
    for _ in range(5):  # a missing token is how the dashboard asks for one: not a failure
        assert httpx.get(gw.admin_url + "/admin/health").status_code == 401
    paths = ["/admin/health", "/admin/openapi.json"] * ADMIN_FAILURES
    for path in paths[:ADMIN_FAILURES]:  # both routes count
        assert httpx.get(gw.admin_url + path, headers={"Authorization": "Bearer guess"}).status_code == 401
    for path, headers in (("/admin/health", right), ("/admin/openapi.json", right), ("/admin/config", {})):
        locked = httpx.get(gw.admin_url + path, headers=headers)  # the right token too: no oracle
        assert locked.status_code == 429, path
        assert locked.json()["error"]["code"] == "admin_locked_out"
        assert 0 < int(locked.headers["retry-after"]) <= 60
    assert (
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "hint:fast", "messages": []}).status_code
        != 429
    )


def test_failed_admin_attempts_expire_with_their_window() -> None:
    now = [100.0]
    attempts = FailedAdminAttempts(limit=3, window_s=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert attempts.locked_for("10.0.0.1") == 0
        attempts.failed("10.0.0.1")
    assert attempts.locked_for("10.0.0.1") == 60.0 and attempts.locked_for("10.0.0.2") == 0
    now[0] += 59.5
    assert attempts.locked_for("10.0.0.1") == 0.5
    now[0] += 1
    assert attempts.locked_for("10.0.0.1") == 0
    attempts.failed("10.0.0.1")  # a fresh window: one failure is not a lockout
    assert attempts.locked_for("10.0.0.1") == 0


def test_admin_is_locked_when_the_token_variable_is_unset(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url), gateway_extra='admin_token_env = "UNSET_ADMIN_TOKEN"\n'
    )
    resp = httpx.get(gw.admin_url + "/admin/health")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "admin_locked"


def test_backend_probes_run_concurrently_and_report_each_backend(start_gateway: StartGateway) -> None:
    with OpenAIBackend(name="up") as up, OpenAIBackend(name="slow") as slow, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        slow.script(Hang(10), path="/v1/models")
        body = f"""
            [backends.up]
            base_url = "{up.url}"
            [backends.slow]
            base_url = "{slow.url}"
            [backends.dead]
            base_url = "{dead_url}"
            [backends.demo]
            base_url = "http://demo.invalid"
            provider = "demo"
            [[tiers]]
            name = "t"
            backend = "up"
            model = "m"
            """
        gw = start_gateway(body)
        resp = httpx.get(gw.admin_url + "/admin/backends/health", timeout=20)
        assert resp.status_code == 207
        # Both failing probes ran at once: the whole call took about one probe timeout, not two.
        assert resp.elapsed.total_seconds() < 5.5
        items = {item["backend"]: item for item in resp.json()["backends"]}
        assert items["up"]["status"] == "ok" and items["up"]["models"] == list(up.models)
        assert items["demo"]["status"] == "ok"
        assert items["slow"]["status"] == "unreachable" and "within" in items["slow"]["error"]
        assert items["dead"]["status"] == "unreachable"
        assert up.requests_to("/v1/chat/completions") == []  # probes never cost tokens


def test_all_healthy_backends_give_200(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    assert httpx.get(gw.admin_url + "/admin/backends/health").status_code == 200


def test_reload_swaps_a_valid_config_and_refuses_a_broken_one(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    new_body = openai_backend_config(fake.url).replace(
        '"hint:cloud" = "cloud:economy"', '"hint:new" = "cloud:economy"'
    )
    gw.config_path.write_text(config_text(new_body))
    resp = httpx.post(gw.admin_url + "/admin/reload")
    assert resp.status_code == 200 and resp.json()["status"] == "reloaded"
    chat = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "hint:new", "messages": [{"role": "user", "content": "x"}]},
    )
    assert chat.status_code == 200 and fake.last_request.model == "economy-model"

    broken = new_body.replace('backend = "mock"', 'backend = "olama"', 1)
    broken += '\n[[clients]]\nkey_env = "K"\nprofile = "nowhere"\n'
    gw.config_path.write_text(config_text(broken))
    refused = httpx.post(gw.admin_url + "/admin/reload")
    assert refused.status_code == 422
    problems = refused.json()["error"]["problems"]
    assert any("olama" in p for p in problems)
    assert any("nowhere" in p for p in problems)
    still = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "hint:new", "messages": [{"role": "user", "content": "x"}]},
    )
    assert still.status_code == 200


def test_reload_while_requests_are_in_flight_loses_none(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.set_default(Reply(text="ok", delay=0.01))

    def call(_: int) -> int:
        body = {"model": "hint:fast", "messages": [{"role": "user", "content": "x"}]}
        return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(40)]
        for _ in range(3):
            assert httpx.post(gw.admin_url + "/admin/reload").status_code == 200
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 40


def test_unknown_admin_path_and_wrong_method(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    assert httpx.get(gw.admin_url + "/admin/nope").status_code == 404
    assert httpx.get(gw.admin_url + "/admin/reload").status_code == 405
    assert httpx.get(gw.url + "/admin/health").status_code == 404  # admin routes are not on the client port
    assert httpx.get(gw.admin_url + "/healthz").status_code == 404
