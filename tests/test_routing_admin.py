"""``POST /admin/route`` (``api/admin_route.route_endpoint``): the decision without the answer.

Called as the admin API will call it, with a real :class:`Gateway` whose backend is the fake OpenAI
upstream, so a classify profile's classifier really is called over HTTP while the answering tier
never is.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from lm_gateway.api.admin_route import route_endpoint
from lm_gateway.config import load_config_text
from lm_gateway.http.server import Request
from lm_gateway.server import Gateway

from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply

CONFIG = """
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

[[tiers]]
name = "cloud:deep"
backend = "mock"
model = "deep-model"
max_context_tokens = 100000

[profiles.default]
mode = "dispatch"

[profiles.auto]
mode = "classify"
classifier = "local:instant"
system_prompt = "Be kind."

[profiles.ladder]
mode = "escalate"
max_auto_tier = "local:fast"

[profiles.locked]
mode = "dispatch"
max_auto_tier = "local:fast"
expert_requires_flag = true

[[clients]]
name = "ha"
key_env = "HA_KEY"
profile = "auto"
profiles = ["ladder"]
"""


def request(body: Any, query: str = "") -> Request:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json"}
    return Request(
        "POST", "/admin/route", query, headers, raw, "127.0.0.1", True, time.monotonic(), frozenset()
    )


async def decide(gateway: Gateway, body: Any, query: str = "") -> tuple[int, dict[str, Any]]:
    response = await route_endpoint(gateway, request(body, query))
    return response.status, orjson.loads(response.body)


def chat(model: str, text: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def gateway(fake: OpenAIBackend) -> Any:
    config = load_config_text(CONFIG.format(url=fake.url), env={"HA_KEY": "k"})
    gateway = Gateway(config)
    yield gateway
    await gateway.stop(0.1)


async def test_classify_calls_only_the_classifier(gateway: Gateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="deep"))
    status, decision = await decide(gateway, chat("auto", "why is the sky blue?"))
    assert status == 200
    assert decision["tier"] == "cloud:deep" and decision["model"] == "deep-model"
    assert decision["class_label"] == "deep" and decision["mode"] == "classify"
    assert decision["system_prompt"] == "Be kind."
    assert (
        decision["header"]
        == "classify label=deep; classifier local:instant=deep; label cloud:deep=deep (suffix)"
    )
    assert [r.json["model"] for r in fake.requests_to("/v1/chat/completions")] == ["instant-model"]


async def test_escalate_shows_its_ladder_and_dispatch_its_tier(gateway: Gateway, fake: OpenAIBackend) -> None:
    status, decision = await decide(gateway, chat("ladder"))
    assert status == 200 and decision["ladder"] == ["local:instant", "local:fast"]
    status, decision = await decide(gateway, chat("local:fast"))
    assert (decision["tier"], decision["header"]) == ("local:fast", "dispatch; answer local:fast")
    assert fake.requests_to("/v1/chat/completions") == []


async def test_query_parameters_stand_in_for_the_client(gateway: Gateway, fake: OpenAIBackend) -> None:
    status, refused = await decide(gateway, chat("ladder"), "profile=auto")
    assert status == 200 and refused["refused"]["status"] == 403
    status, allowed = await decide(gateway, chat("ladder"), "client=ha")
    assert allowed["profile"] == "ladder"
    status, gated = await decide(gateway, chat("cloud:deep"), "profile=locked")
    assert gated["refused"]["error"]["code"] == "expert_flag_required"
    status, flagged = await decide(gateway, chat("cloud:deep"), "profile=locked&expert=true")
    assert flagged["tier"] == "cloud:deep"


@pytest.mark.parametrize(
    ("body", "query", "status"),
    [
        (b"not json", "", 400),
        ({"model": "x"}, "", 400),
        (chat("auto"), "profile=nope", 404),
        (chat("auto"), "client=nobody", 404),
        (chat("auto"), "priority=high", 400),
    ],
)
async def test_bad_requests(gateway: Gateway, body: Any, query: str, status: int) -> None:
    assert (await decide(gateway, body, query))[0] == status
