"""The router's outputs reach clients and operators over real sockets: ``X-LMG-Route`` on answers,
``POST /admin/route`` on the admin port, extra profiles unlocked by a client's key, escalation and
cost in the traffic stats."""

from __future__ import annotations

import httpx

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status

LADDER = """
[backends.mock]
base_url = "{url}"

[[tiers]]
name = "local:small"
backend = "mock"
model = "small-model"
input_cost_per_mtok = 0.1
output_cost_per_mtok = 0.2

[[tiers]]
name = "cloud:large"
backend = "mock"
model = "large-model"
input_cost_per_mtok = 3.0
output_cost_per_mtok = 15.0

[aliases]
"hint:fast" = "local:small"

[profiles.default]
mode = "dispatch"
classifier = "local:small"
failover = true

[profiles.careful]
mode = "escalate"
max_auto_tier = "cloud:large"

[profiles.other]
mode = "dispatch"
classifier = "cloud:large"

[[clients]]
name = "team"
key_env = "TEAM_KEY"
profile = "default"
profiles = ["careful"]
"""
KEY = {"Authorization": "Bearer team-key-1"}
ASK = {"messages": [{"role": "user", "content": "Explain how lifetimes work in Rust."}]}


def chat(url: str, model: str, headers: dict[str, str] = KEY) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={**ASK, "model": model}, headers=headers, timeout=20)


def test_failover_is_explained_in_the_route_header_and_the_traffic_entry(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(LADDER.format(url=fake.url), env={"TEAM_KEY": "team-key-1"})
    fake.script(Status(503), Reply(text="answer from the large tier, complete and useful"))
    resp = chat(gw.url, "hint:fast")
    assert resp.status_code == 200
    assert resp.headers["x-lmg-tier"] == "cloud:large"
    route = resp.headers["x-lmg-route"]
    assert "local:small" in route and "cloud:large" in route
    models = [r.json["model"] for r in fake.requests_to("/v1/chat/completions")]
    assert models == ["small-model", "large-model"]
    entry = gw.traffic()[0]
    assert entry["tier"] == "cloud:large" and entry["route"]


def test_a_key_unlocks_its_extra_profiles_and_escalation_is_recorded_with_its_cost(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(LADDER.format(url=fake.url), env={"TEAM_KEY": "team-key-1"})
    assert chat(gw.url, "other").status_code == 403  # not in the key's list
    good = "Lifetimes tell the compiler how long references stay valid."
    fake.script(Reply(text="Sure."), Reply(text=good))
    resp = chat(gw.url, "careful")
    assert resp.status_code == 200 and resp.headers["x-lmg-profile"] == "careful"
    assert resp.headers["x-lmg-tier"] == "cloud:large"
    entry = gw.traffic()[0]
    assert entry["escalated"] is True and entry["cost_usd"] and entry["cost_usd"] > 0
    stats = gw.admin_get("/admin/traffic")["stats"]
    assert stats["cost"]


def test_admin_route_explains_without_calling_the_answering_tier(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(LADDER.format(url=fake.url), env={"TEAM_KEY": "team-key-1"})
    resp = httpx.post(gw.admin_url + "/admin/route", json={**ASK, "model": "hint:fast"})
    assert resp.status_code == 200, resp.text
    decision = resp.json()
    assert decision["tier"] == "local:small"
    assert fake.requests_to("/v1/chat/completions") == []


def test_priority_header_is_accepted_and_bad_values_are_ignored(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(LADDER.format(url=fake.url), env={"TEAM_KEY": "team-key-1"})
    for value in ("10", "-5", "not-a-number", "99999999999999999999"):
        resp = chat(gw.url, "hint:fast", {**KEY, "X-LMG-Priority": value})
        assert resp.status_code == 200
