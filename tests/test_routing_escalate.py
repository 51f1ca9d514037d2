"""Escalate mode through the real router: each tier's scripted answer → which tier answers, what the
route says, the sufficiency strategies (heuristics, logprobs, judge), the best answer when none
passes, the caps, and streaming (buffered cheaper tiers, the final tier live).

Case 9 of lm-gateway-rs (both tiers sufficient → the first) is the first row of the table.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lm_gateway.backends import BackendError
from lm_gateway.router import serve
from lm_gateway.traffic import TrafficEntry

from .test_routing_kit import GOOD, LADDER, Rig, Say, profile

BAD_REFUSAL = Say(text="I'm sorry, as an AI I cannot help with that.")
SHORT = Say(text="Sure.")
EMPTY = Say(text="")
TRUNCATED = Say(text="A long answer that was cut off in the mid", finish="length")
TOOL = Say(text="", tools=True)
ERROR = Say(status=503)


def escalate(extra: str = "", sufficiency: str = "", tail: str = "") -> str:
    table = f"\n[profiles.default.sufficiency]\n{sufficiency}\n" if sufficiency else ""
    return LADDER + profile("escalate", 'max_auto_tier = "cloud:deep"\n' + extra) + table + tail


def script(rig: Rig, **answers: Say) -> None:
    """Answers by tier model: ``instant=..., fast=..., deep=..., expert=...`` (default: a good one)."""
    by_model = {f"{name}-model": say for name, say in answers.items()}
    rig.mock.by = lambda model, body: by_model.get(model, Say())


@pytest.mark.parametrize(
    ("answers", "tier", "calls", "escalated", "route"),
    [
        ({}, "local:instant", ["instant"], False, "try local:instant=ok"),
        (
            {"instant": BAD_REFUSAL},
            "local:fast",
            ["instant", "fast"],
            True,
            "try local:instant=insufficient (refusal)",
        ),
        (
            {"instant": SHORT, "fast": TRUNCATED},
            "cloud:deep",
            ["instant", "fast", "deep"],
            True,
            "(truncated)",
        ),
        (
            {"instant": EMPTY, "fast": SHORT, "deep": BAD_REFUSAL},
            "local:fast",
            ["instant", "fast", "deep"],
            True,
            "best local:fast",
        ),
        (
            {"instant": ERROR},
            "local:fast",
            ["instant", "fast"],
            True,
            "try local:instant=error (backend_http_503)",
        ),
        ({"instant": TOOL}, "local:instant", ["instant"], False, "(tool call)"),  # 10.1 #11
    ],
)
async def test_escalation_ladder(
    answers: dict[str, Say], tier: str, calls: list[str], escalated: bool, route: str
) -> None:
    rig = Rig(escalate())
    script(rig, **answers)
    result = await rig.ask()
    assert result.error is None, result.error
    assert result.tier == tier and result.entry.escalated is escalated
    assert rig.mock.models() == [f"{name}-model" for name in calls]
    assert route in (result.header or ""), result.header
    assert result.header and result.header.startswith("escalate; ")


async def test_when_every_tier_fails_and_return_best_is_off_the_client_gets_a_502() -> None:
    rig = Rig(escalate(sufficiency="return_best = false"))
    script(rig, instant=SHORT, fast=SHORT, deep=SHORT)
    result = await rig.ask()
    assert isinstance(result.error, BackendError) and result.error.code == "escalation_exhausted"
    assert result.error.status == 502 and len(result.steps("try")) == 3


async def test_every_tier_erroring_gives_the_last_error() -> None:
    rig = Rig(escalate())
    rig.mock.default = ERROR
    result = await rig.ask()
    assert isinstance(result.error, BackendError) and result.error.code == "backend_http_503"


async def test_invalid_json_escalates_when_json_was_asked_for() -> None:
    rig = Rig(escalate())
    script(rig, instant=Say(text="Here you go: {a: 1}"), fast=Say(text='{"a": 1}'))
    result = await rig.ask(response_format={"type": "json_object"})
    assert result.tier == "local:fast" and result.text == '{"a": 1}'


@pytest.mark.parametrize(
    ("extra", "tail", "client", "calls"),
    [
        ("max_escalations = 1", "", None, ["instant", "fast"]),
        ("max_escalations = 0", "", None, ["instant"]),
        (
            "",
            '[[clients]]\nname = "c"\nkey_env = "KEY"\nprofile = "default"\nmax_escalations_per_minute = 0\n',
            "c",
            ["instant"],
        ),
    ],
)
async def test_escalation_caps(extra: str, tail: str, client: str | None, calls: list[str]) -> None:
    rig = Rig(escalate(extra, tail=tail))
    rig.mock.default = SHORT
    result = await rig.ask(client=client)
    assert result.error is None and rig.mock.models() == [f"{name}-model" for name in calls]


async def test_skipped_tiers_do_not_count_as_escalation() -> None:
    toml = escalate().replace('model = "instant-model"', 'model = "instant-model"\nmax_context_tokens = 5')
    rig = Rig(toml)
    result = await rig.ask("a question long enough not to fit five tokens")
    assert result.tier == "local:fast" and result.entry.escalated is False  # 10.1 #11
    assert {"step": "skip", "tier": "local:instant", "reason": "context too small"} in result.steps()


async def test_logprobs_are_asked_for_judged_and_removed_from_the_answer() -> None:
    rig = Rig(escalate(sufficiency='checks = ["heuristics", "logprobs"]\nlogprob_threshold = 0.5'))
    unsure = Say(logprobs=(-0.01,) * 5 + (-2.5,) * 5)
    sure = Say(logprobs=(-0.01,) * 10)
    script(rig, instant=unsure, fast=sure)
    result = await rig.ask()
    assert result.tier == "local:fast"
    assert all(body.get("logprobs") is True for _, body in rig.mock.calls)
    assert result.served is not None and result.served.completion is not None
    assert "logprobs" not in orjson.loads(result.served.completion.body)["choices"][0]
    assert "token probability" in (result.header or "")
    # A client that asked for logprobs gets them.
    rig.mock.calls.clear()
    kept = await rig.ask(logprobs=True)
    assert kept.served is not None and kept.served.completion is not None
    assert "logprobs" in orjson.loads(kept.served.completion.body)["choices"][0]


JUDGE = 'checks = ["heuristics", "judge"]\njudge = "cloud:expert"\njudge_threshold = 7'


def judged(scores: dict[str, str]) -> Any:
    """A backend whose judge tier grades each answer by which tier wrote it (the judge sees it)."""

    def answer(model: str, body: dict[str, Any]) -> Say:
        if model != "expert-model":
            return Say(text=f"{GOOD} [{model}]")
        graded = body["messages"][1]["content"]
        for writer, score in scores.items():
            if f"[{writer}-model]" in graded:
                return Say(text=score)
        return Say(text="SCORE: 0")

    return answer


@pytest.mark.parametrize(
    ("scores", "tier", "judge_calls"),
    [
        ({"instant": "SCORE: 9"}, "local:instant", 1),
        ({"instant": "SCORE: 3", "fast": "SCORE: 8"}, "local:fast", 2),
        ({"instant": "SCORE: 3", "fast": "SCORE: 2"}, "cloud:deep", 2),  # the final tier is not judged
        ({"instant": "I refuse to grade"}, "local:instant", 1),  # no score: the judge abstains
    ],
)
async def test_judge(scores: dict[str, str], tier: str, judge_calls: int) -> None:
    rig = Rig(escalate(sufficiency=JUDGE))
    rig.mock.by = judged(scores)
    result = await rig.ask("What is the capital of Australia?")
    assert result.tier == tier, result.header
    assert rig.mock.models().count("expert-model") == judge_calls
    judge_body = next(body for model, body in rig.mock.calls if model == "expert-model")
    assert "What is the capital of Australia?" in judge_body["messages"][1]["content"]
    assert judge_body["temperature"] == 0


async def test_a_failing_judge_abstains() -> None:
    rig = Rig(escalate(sufficiency=JUDGE))
    script(rig, expert=ERROR)
    result = await rig.ask()
    assert result.tier == "local:instant"
    assert "judge cloud:expert=error" in (result.header or "")


async def test_cost_counts_abandoned_tiers_and_the_judge() -> None:
    priced = LADDER.replace(
        'backend = "mock"\nmodel', 'backend = "mock"\ninput_cost_per_mtok = 1000000.0\nmodel'
    )
    rig = Rig(
        priced
        + profile("escalate", 'max_auto_tier = "cloud:deep"')
        + f"[profiles.default.sufficiency]\n{JUDGE}\n"
    )
    rig.mock.by = judged({"instant": "SCORE: 1", "fast": "SCORE: 9"})
    result = await rig.ask()
    # Each call has usage (10, 20): 10 prompt tokens at 1 USD each; 4 calls (2 answers, 2 judgements).
    assert result.tier == "local:fast" and result.entry.cost_usd == pytest.approx(40.0)
    assert sum(step.get("cost_usd", 0) for step in result.steps()) == pytest.approx(40.0)


async def test_open_circuits_are_skipped() -> None:
    toml = LADDER.replace(
        'name = "local:instant"\nbackend = "mock"', 'name = "local:instant"\nbackend = "flaky"'
    )
    toml += '[backends.flaky]\nbase_url = "http://flaky.invalid"\n'
    rig = Rig(
        toml + profile("escalate", 'max_auto_tier = "cloud:deep"'), gateway="circuit_cooldown_ms = 60000"
    )
    rig.backends["flaky"].default = ERROR
    for _ in range(3):
        await rig.ask()
    result = await rig.ask()
    assert result.tier == "local:fast" and result.entry.escalated is False
    assert {"step": "skip", "tier": "local:instant", "reason": "circuit open"} in result.steps()
    assert len(rig.backends["flaky"].calls) == 3


async def test_pre_router_picks_the_first_tier_to_try() -> None:
    tail = '[[profiles.default.pre_router]]\nroute_to = "cloud:expert"\nhas_code = true\n'
    rig = Rig(escalate(tail=tail))
    result = await rig.ask("```\nfix me\n```")
    assert result.tier == "cloud:deep"  # the target, clamped to the ladder's top
    assert rig.mock.models() == ["deep-model"]


async def test_no_tier_available() -> None:
    toml = escalate().replace('backend = "mock"\nmodel', 'backend = "mock"\nmax_context_tokens = 1\nmodel')
    result = await Rig(toml).ask("too long for every window")
    assert isinstance(result.error, BackendError) and result.error.code == "no_tier_available"


# -- streaming ---------------------------------------------------------------------------------------


async def test_stream_buffers_cheap_tiers_and_replays_the_first_that_passes() -> None:
    rig = Rig(escalate())
    script(rig, instant=BAD_REFUSAL)
    result = await rig.ask(stream=True, stream_options={"include_usage": True})
    assert result.tier == "local:fast" and result.entry.escalated is True
    assert result.text == GOOD
    assert b'"usage"' in result.chunks[-2] and result.chunks[-1] == b"data: [DONE]\n\n"
    assert BAD_REFUSAL.text is not None and BAD_REFUSAL.text.encode() not in b"".join(result.chunks)
    assert all(body.get("stream_options") == {"include_usage": True} for _, body in rig.mock.calls)


async def test_stream_sends_the_final_tier_live() -> None:
    rig = Rig(escalate())
    script(rig, instant=SHORT, fast=SHORT, deep=Say(text="live from the top"))
    result = await rig.ask(stream=True, drain=False)
    assert result.served is not None and result.served.stream is not None
    assert result.tier == "cloud:deep" and result.entry.escalated is True
    live = rig.mock.streams[-1]
    assert not live.closed  # not buffered: the client reads it as it comes
    chunks = [chunk async for chunk in result.served.stream]
    assert live.closed and b"live" in chunks[0]
    assert "answer cloud:deep (final tier, streamed live)" in (result.header or "")


async def test_stream_falls_back_to_the_best_buffered_answer_when_the_final_tier_fails() -> None:
    rig = Rig(escalate())
    script(rig, instant=SHORT, fast=Say(text="Okay then."), deep=ERROR)
    result = await rig.ask(stream=True)
    assert result.tier == "local:fast" and result.text == "Okay then."


async def test_a_broken_cheap_stream_counts_as_a_failed_tier() -> None:
    rig = Rig(escalate())
    script(rig, instant=Say(broken_stream=True))
    result = await rig.ask(stream=True)
    assert result.tier == "local:fast" and result.text == GOOD
    assert "try local:instant=error (backend_stream_error)" in (result.header or "")


async def test_a_request_that_is_not_a_chat_is_served_by_the_start_tier() -> None:
    # Embeddings and legacy completions reach the router too (forwarded natively by the API layer).
    rig = Rig(escalate())
    body = {"model": "default", "input": "embed me"}
    entry = TrafficEntry("t", 0.0, "c", None, None, "/v1/embeddings")
    served = await serve(
        rig.table, dict(rig.backends), body, bound_profile=None, expert=False, stream=False, trace=entry
    )
    assert served.completion is not None and entry.tier == "local:instant"
    assert rig.mock.models() == ["instant-model"]
