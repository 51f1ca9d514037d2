"""The routing modes over real sockets: a gateway process-in-a-thread, the fake OpenAI upstream, the
official SDK. The unit suites prove the behaviours; these prove they survive the real wire (SSE
buffering and replay, Retry-After from real headers, the traffic log)."""

from __future__ import annotations

import textwrap

import httpx
import openai
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status
from .gateway import RunningGateway

GOOD = "A complete and helpful answer, long enough to pass every heuristic."

LADDER = """
[backends.mock]
base_url = "{url}"

[[tiers]]
name = "local:instant"
backend = "mock"
model = "instant-model"

[[tiers]]
name = "local:fast"
backend = "mock"
model = "fast-model"
input_cost_per_mtok = 1.0
output_cost_per_mtok = 2.0

[[tiers]]
name = "cloud:deep"
backend = "mock"
model = "deep-model"

[profiles.default]
mode = "dispatch"
failover = true
max_auto_tier = "cloud:deep"

[profiles.auto]
mode = "classify"
classifier = "local:instant"
max_auto_tier = "cloud:deep"

[profiles.ladder]
mode = "escalate"
max_auto_tier = "cloud:deep"
"""


@pytest.fixture
def gw(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    return start_gateway(LADDER.format(url=fake.url), gateway_extra="max_retries = 1\nretry_delay_ms = 1\n")


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def ask(gw: RunningGateway, model: str, text: str = "hello", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)


def test_a_profile_name_as_model_runs_its_classifier(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="deep"), Reply(text=GOOD))
    completion = sdk(gw).chat.completions.create(model="auto", messages=[{"role": "user", "content": "why?"}])
    assert completion.choices[0].message.content == GOOD
    models = [request.json["model"] for request in fake.requests_to("/v1/chat/completions")]
    assert models == ["instant-model", "deep-model"]
    entry = gw.traffic()[0]
    assert (entry["mode"], entry["tier"], entry["class_label"]) == ("classify", "cloud:deep", "deep")
    assert [step["step"] for step in entry["route"]] == ["classifier", "label", "answer"]


def test_retry_after_is_honoured_then_the_request_fails_over(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(
        Status(503, headers={"Retry-After": "0"}),  # retried on local:fast...
        Status(503, headers={"Retry-After": "0"}),  # ...fails again: over to cloud:deep
        Reply(text=GOOD),
    )
    resp = ask(gw, "local:fast")
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == GOOD
    assert resp.headers["x-lmg-tier"] == "cloud:deep"
    models = [request.json["model"] for request in fake.requests_to("/v1/chat/completions")]
    assert models == ["fast-model", "fast-model", "deep-model"]
    entry = gw.traffic()[0]
    assert entry["route"][0] == {
        "step": "answer",
        "tier": "local:fast",
        "outcome": "error",
        "reason": "backend_http_503",
        "status": 503,
        "attempts": 2,
    }


def test_a_client_error_is_not_retried(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Status(400, message="bad temperature"))
    resp = ask(gw, "local:fast")
    assert resp.status_code == 400 and len(fake.requests_to("/v1/chat/completions")) == 1


def test_escalate_streams_the_buffered_answer_that_passed(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="I don't know."), Reply(text=GOOD))
    stream = sdk(gw).chat.completions.create(
        model="ladder",
        messages=[{"role": "user", "content": "q"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == GOOD
    assert chunks[-1].usage is not None
    requests = fake.requests_to("/v1/chat/completions")
    assert [r.json["model"] for r in requests] == ["instant-model", "fast-model"]
    assert all(r.json["stream"] is True for r in requests)
    entry = gw.traffic()[0]
    assert entry["escalated"] is True and entry["tier"] == "local:fast" and entry["status"] == 200
    assert entry["cost_usd"] and entry["cost_usd"] > 0  # local:fast is priced


def test_escalate_without_stream(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="Sure."), Reply(text="Fine."), Reply(text=GOOD))
    resp = ask(gw, "ladder")
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == GOOD
    assert resp.headers["x-lmg-tier"] == "cloud:deep"


def test_a_bound_client_cannot_switch_profiles(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    clients = textwrap.dedent(
        """
        [[clients]]
        name = "app"
        key_env = "APP_KEY"
        profile = "default"
        """
    )
    gw = start_gateway(LADDER.format(url=fake.url) + clients, env={"APP_KEY": "k1"})
    resp = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer k1"},
        timeout=10,
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "profile_not_allowed"
