"""Dispatch through the real router with scripted backends: retries, failover, circuit breaker,
context gating and the expert gate, cost ceilings and accounting, the request deadline, thinking
messages, and the explainable route.

Numbered comments refer to lm-gateway-rs acceptance cases (reference §9.1).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lm_gateway.backends import BackendError
from lm_gateway.router import RoutingError

from .test_routing_kit import GOOD, LADDER, Rig, Say, profile

OK = Say()
E503 = Say(status=503)
E400 = Say(status=400)


def dispatch(extra: str = "") -> str:
    return LADDER + profile("dispatch", 'max_auto_tier = "cloud:deep"\n' + extra)


async def test_dispatch_goes_to_the_named_tier() -> None:  # 6, 10
    rig = Rig(dispatch())
    result = await rig.ask(model="hint:fast")
    assert result.text == GOOD
    assert (result.entry.tier, result.entry.backend, result.entry.model) == (
        "local:fast",
        "mock",
        "fast-model",
    )
    assert result.entry.route is None  # nothing to explain beyond the tier
    assert result.header == "dispatch; answer local:fast"


@pytest.mark.parametrize(
    ("retries", "failover", "script", "answered_by", "calls", "error_code"),
    [
        (1, False, [E503, OK], "local:fast", ["fast-model"] * 2, None),  # retried on the same tier
        (1, False, [E503, E503], None, ["fast-model"] * 2, "backend_http_503"),
        (0, True, [E503], "cloud:deep", ["fast-model", "deep-model"], None),  # fails over up the ladder
        (2, True, [E400], None, ["fast-model"], "backend_http_400"),  # 4xx: no retry, no failover
        (1, False, [Say(status=429, retry_after="0")], "local:fast", ["fast-model"] * 2, None),
        (3, True, [Say(status=429, retry_after="60")], "cloud:deep", ["fast-model", "deep-model"], None),
        (0, True, [Say(status=504)], "cloud:deep", ["fast-model", "deep-model"], None),
    ],
)
async def test_retries_and_failover(
    retries: int,
    failover: bool,
    script: list[Say],
    answered_by: str | None,
    calls: list[str],
    error_code: str | None,
) -> None:
    rig = Rig(
        dispatch(f"failover = {str(failover).lower()}"),
        gateway=f"max_retries = {retries}\nretry_delay_ms = 1",
    )
    rig.mock.queue("fast-model", *script)
    result = await rig.ask(model="local:fast")
    assert rig.mock.models() == calls
    if answered_by is None:
        assert isinstance(result.error, BackendError) and result.error.code == error_code
        assert result.steps()[-1]["outcome"] == "error"
    else:
        assert result.error is None and result.tier == answered_by
    if answered_by == "cloud:deep":
        assert [step["step"] for step in result.steps()] == ["answer", "failover", "answer"]
        assert result.steps()[0]["outcome"] == "error"
        assert "failover cloud:deep" in (result.header or "")


async def test_failover_stays_within_the_ceiling_and_skips_open_circuits() -> None:
    rig = Rig(dispatch("failover = true"))
    rig.mock.queue("deep-model", E503)
    result = await rig.ask(model="cloud:deep")  # already at the ceiling: nowhere to go
    assert isinstance(result.error, BackendError) and rig.mock.models() == ["deep-model"]


async def test_failover_passes_over_a_backend_whose_circuit_is_open() -> None:
    toml = LADDER.replace(
        '[[tiers]]\nname = "cloud:deep"\nbackend = "mock"',
        '[[tiers]]\nname = "cloud:deep"\nbackend = "other"',
    )
    toml += '[backends.other]\nbase_url = "http://other.invalid"\n'
    rig = Rig(toml + profile("dispatch", "failover = true"), gateway="circuit_cooldown_ms = 60000")
    rig.backends["other"].default = E503
    for _ in range(3):
        await rig.ask(model="cloud:deep")  # three failures open the circuit
    rig.mock.queue("fast-model", E503)
    result = await rig.ask(model="local:fast")
    assert result.tier == "cloud:expert"
    assert {"step": "skip", "tier": "cloud:deep", "reason": "circuit open"} in result.steps()


async def test_circuit_breaker_opens_fails_fast_and_probes_after_the_cool_down() -> None:
    rig = Rig(dispatch(), gateway="circuit_cooldown_ms = 150\ncircuit_min_failures = 3")
    rig.mock.queue("fast-model", E503, E503, E503)
    for _ in range(3):
        assert (await rig.ask()).error is not None
    fast_fail = await rig.ask()
    assert isinstance(fast_fail.error, BackendError) and fast_fail.error.code == "backend_circuit_open"
    assert fast_fail.error.retry_after is not None
    assert fast_fail.steps()[-1]["reason"] == "circuit open"
    assert len(rig.mock.calls) == 3  # not called while open
    await asyncio.sleep(0.2)
    probe = await rig.ask()
    assert probe.error is None and len(rig.mock.calls) == 4
    assert (await rig.ask()).error is None  # closed again


async def test_4xx_and_429_do_not_open_the_circuit() -> None:
    rig = Rig(dispatch(), gateway="circuit_min_failures = 2")
    rig.mock.queue("fast-model", E400, E400, Say(status=429), Say(status=429))
    for _ in range(4):
        await rig.ask()
    assert (await rig.ask()).error is None


async def test_context_bump_moves_up_but_not_past_the_ceiling() -> None:  # 7, and 10.1 #13
    toml = LADDER.replace('model = "fast-model"', 'model = "fast-model"\nmax_context_tokens = 10')
    rig = Rig(toml + profile("dispatch", 'max_auto_tier = "cloud:deep"'))
    words = "word " * 40
    result = await rig.ask(words, model="hint:fast")
    assert result.tier == "cloud:deep"
    assert result.steps("context")[0]["outcome"] == "bumped"
    capped = Rig(toml + profile("dispatch", 'max_auto_tier = "local:fast"\nexpert_requires_flag = true'))
    for expert in (False, True):  # automatic moves never pass the ceiling, flag or not
        result = await capped.ask(words, model="hint:fast", expert=expert)
        assert result.tier == "local:fast"
        assert "fit no tier" in result.steps("context")[0]["reason"]


async def test_a_request_already_above_the_ceiling_may_bump_further() -> None:
    toml = LADDER.replace('model = "deep-model"', 'model = "deep-model"\nmax_context_tokens = 10')
    rig = Rig(toml + profile("dispatch", 'max_auto_tier = "local:fast"\nexpert_requires_flag = true'))
    refused = await rig.ask("word " * 40, model="cloud:deep")
    assert isinstance(refused.error, RoutingError) and refused.error.code == "expert_flag_required"
    result = await rig.ask("word " * 40, model="cloud:deep", expert=True)
    assert result.tier == "cloud:expert"


PRICED = LADDER.replace(
    'model = "deep-model"',
    'model = "deep-model"\ninput_cost_per_mtok = 1000.0\noutput_cost_per_mtok = 2000.0',
)


async def test_cost_is_recorded_per_call_from_usage() -> None:
    rig = Rig(PRICED + profile("dispatch", "failover = true"))
    rig.mock.queue("deep-model", Say(usage=(100, 50)))
    result = await rig.ask(model="cloud:deep")
    assert result.entry.cost_usd == pytest.approx((100 * 1000 + 50 * 2000) / 1e6)
    unpriced = await rig.ask(model="local:fast")
    assert unpriced.entry.cost_usd is None


async def test_cost_without_usage_is_estimated() -> None:
    rig = Rig(PRICED + profile("dispatch"))
    rig.mock.queue("deep-model", Say(usage=None, text="four words long answer"))
    result = await rig.ask("x" * 400, model="cloud:deep")
    assert result.entry.cost_usd is not None and result.entry.cost_usd > 0.1


async def test_cost_ceiling_refuses_a_named_tier_over_it() -> None:
    rig = Rig(PRICED + profile("dispatch", "cost_ceiling = 0.5"))
    refused = await rig.ask(model="cloud:deep", max_tokens=1000)
    assert isinstance(refused.error, RoutingError) and refused.error.code == "cost_ceiling_exceeded"
    assert (await rig.ask(model="cloud:deep", max_tokens=10)).error is None  # small enough
    assert rig.mock.models() == ["deep-model"]


async def test_request_timeout_covers_the_whole_request() -> None:
    rig = Rig(dispatch(), gateway="request_timeout_ms = 200\nmax_retries = 3\nretry_delay_ms = 1")
    rig.mock.queue("fast-model", Say(delay=5))
    started = time.monotonic()
    result = await rig.ask()
    assert isinstance(result.error, BackendError) and result.error.code == "gateway_timeout"
    assert result.error.status == 504 and time.monotonic() - started < 1.0


async def test_thinking_messages_open_the_stream() -> None:
    rig = Rig(LADDER + profile("dispatch", '[profiles.default.thinking_messages]\n"local:fast" = ["Hmm..."]'))
    result = await rig.ask(stream=True)
    assert result.chunks[0].startswith(b"data: ") and b'"content":"Hmm... "' in result.chunks[0]
    assert result.text == "Hmm... " + GOOD
    plain = await rig.ask(stream=True, model="cloud:deep")
    assert plain.text == GOOD


async def test_a_priced_stream_is_charged_when_it_ends() -> None:
    rig = Rig(PRICED + profile("dispatch"))
    rig.mock.queue("deep-model", Say(usage=(1000, 1000)))
    result = await rig.ask(stream=True, model="cloud:deep", drain=False)
    assert result.served is not None and result.served.stream is not None
    assert result.entry.cost_usd is None  # not yet: the stream has not run
    chunks = [chunk async for chunk in result.served.stream]
    assert chunks[-1] == b"data: [DONE]\n\n"
    assert result.entry.cost_usd == pytest.approx(3.0)
    assert result.served.stream.completion_tokens == 1000


async def test_reply_profile_answers_without_a_backend() -> None:
    rig = Rig(LADDER + profile("reply", 'reply_message = "Go away."'))
    result = await rig.ask()
    assert result.text == "Go away." and result.entry.tier == "reply" and rig.mock.calls == []
    streamed = await rig.ask(stream=True)
    assert streamed.text.strip() == "Go away."


async def test_a_retried_answer_shows_its_retries_in_the_route() -> None:
    rig = Rig(dispatch(), gateway="max_retries = 2\nretry_delay_ms = 1")
    rig.mock.queue("fast-model", E503, Say(status=502), OK)
    result = await rig.ask()
    assert result.text == GOOD
    assert result.header == (
        "dispatch; retry local:fast=ok after 3 attempts (backend_http_502); answer local:fast"
    )
