"""Escalate mode: the cheapest tier answers first; the answer is judged; step up only if needed.

The ladder runs from the start tier (the cheapest, or the pre-router's pick) to the ceiling. Tiers
whose circuit is open, whose context window is too small or whose estimated cost is above the
profile's ceiling are passed over, and the route says so. Each step up is bounded by the profile's
``max_escalations`` and the client's escalation budget; the last tier allowed is the *final* one.

Judging (``sufficiency.py``) runs the profile's checks, cheapest first; the final tier is not sent
to the judge (nothing is above it), only through the free checks, so that an earlier answer can
still win on score. A tier that errors is passed over like an insufficient one (escalation is its
own failover). When no answer passes, the best one seen is returned (``return_best``, the default),
else the client gets a 502 listing what each tier did.

Streaming: cheaper tiers are streamed into a buffer (never shown to the client) and judged; the
first that passes is replayed as a stream; the final tier is streamed live. ``escalated`` is set only
when the answer came from above a tier that was actually tried, not merely skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from lm_gateway.backends import BackendError, ChatStream, Completion
from lm_gateway.config.schema import TierConfig
from lm_gateway.router.context import RequestContext
from lm_gateway.router.ladder import skip_reason, spend_step_up, tier_body
from lm_gateway.router.prerouter import pre_route
from lm_gateway.router.sufficiency import (
    HEURISTICS,
    JUDGE,
    LOGPROBS,
    Answer,
    Verdict,
    heuristic_verdict,
    judge_messages,
    judge_verdict,
    logprob_verdict,
    parse_score,
    wants_json,
)
from lm_gateway.router.table import ProfilePlan
from lm_gateway.router.upstream import ask, collect, complete, content_of, open_stream

JUDGE_MAX_TOKENS = 256


@dataclass(slots=True)
class Outcome:
    """The answer escalate mode settled on: a whole one, or a live stream (final tier only)."""

    tier: TierConfig
    escalated: bool
    payload: dict[str, Any] | None = None
    completion: Completion | None = None
    stream: ChatStream | None = None


@dataclass(slots=True)
class _Candidate:
    tier: TierConfig
    score: float
    payload: dict[str, Any]
    completion: Completion | None


def start_tier(ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any]) -> int:
    """Where escalation starts: the cheapest tier, or the pre-router's pick (within the ceiling; a
    start above the cheapest tier spends one step of the client's budget)."""
    rule = pre_route(plan.pre_rules, body)
    if rule is None:
        return 0
    table = ctx.table
    start = min(table.tier_index[rule.tier.name], plan.ceiling)
    ctx.note({"step": "pre_router", "tier": table.ladder[start].name, "outcome": f"rule {rule.index}"})
    return spend_step_up(ctx, start, "pre-router start")


def ladder(ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], start: int) -> list[TierConfig]:
    """The tiers escalation may call, in order; the ones passed over are noted in the route."""
    tiers: list[TierConfig] = []
    for tier in ctx.table.ladder[start : plan.ceiling + 1]:
        reason = skip_reason(ctx, plan, tier, body)
        if reason is None:
            tiers.append(tier)
        else:
            ctx.note({"step": "skip", "tier": tier.name, "reason": reason})
    return tiers


def no_tier(plan: ProfilePlan) -> BackendError:
    return BackendError(
        503,
        f"no tier of profile '{plan.profile.name}' can take this request now (see X-LMG-Route)",
        code="no_tier_available",
        retryable=True,
    )


async def escalate(ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], start: int) -> Outcome:
    tiers = ladder(ctx, plan, body, start)
    if not tiers:
        raise no_tier(plan)
    settings = plan.profile.sufficiency
    add_logprobs = LOGPROBS in settings.checks and "logprobs" not in body
    best: _Candidate | None = None
    first_called: TierConfig | None = None
    last_error: BackendError | None = None
    for step, tier in enumerate(tiers):
        if step and not ctx.step_up():
            ctx.note({"step": "budget", "tier": tier.name, "reason": "escalation budget spent"})
            break
        final = _is_final(ctx, plan, step, len(tiers))
        ctx.trace.tier, ctx.trace.model = tier.name, tier.model
        if final and ctx.stream:
            try:
                stream = await _live(ctx, tier, body)
            except BackendError as err:
                last_error = err
                break
            return Outcome(tier, first_called is not None and first_called is not tier, stream=stream)
        call_body = tier_body(ctx.table, body, tier, None)
        if add_logprobs:
            call_body["logprobs"] = True
        first_called = first_called or tier
        try:
            payload, completion, ms, cost = await _answer(ctx, tier, call_body)
        except BackendError as err:
            last_error = err
            if final:
                break
            continue
        verdict = await judge(ctx, plan, body, Answer.of(payload), final=final)
        note: dict[str, Any] = {
            "step": "try",
            "tier": tier.name,
            "outcome": "ok" if verdict.passed else "insufficient",
        }
        note["reason"] = verdict.reason
        note["ms"] = round(ms, 1)
        if cost is not None:
            note["cost_usd"] = cost
        ctx.note(note)
        if add_logprobs:
            _drop_logprobs(payload)
            completion = None  # re-encoded without the logprobs the client did not ask for
        if verdict.passed:
            return Outcome(tier, tier is not first_called, payload, completion)
        if best is None or verdict.score >= best.score:
            best = _Candidate(tier, verdict.score, payload, completion)
        if final:
            break
    if best is not None and settings.return_best:
        ctx.note({"step": "best", "tier": best.tier.name, "reason": "no tier passed; best answer seen"})
        return Outcome(best.tier, best.tier is not first_called, best.payload, best.completion)
    if best is None and last_error is not None:
        raise last_error
    raise BackendError(
        502,
        f"no tier of profile '{plan.profile.name}' gave a sufficient answer (see X-LMG-Route)",
        code="escalation_exhausted",
    )


def _is_final(ctx: RequestContext, plan: ProfilePlan, step: int, count: int) -> bool:
    """Whether tier number ``step`` is the last escalation may call."""
    cap = plan.profile.max_escalations
    return step + 1 >= count or (cap is not None and step >= cap) or not ctx.may_step_up()


async def _live(ctx: RequestContext, tier: TierConfig, body: dict[str, Any]) -> ChatStream:
    step: dict[str, Any] = {"step": "answer", "tier": tier.name, "reason": "final tier, streamed live"}
    stream = await open_stream(ctx, tier, tier_body(ctx.table, body, tier, None), step=step)
    ctx.note(step)
    return stream


async def _answer(
    ctx: RequestContext, tier: TierConfig, body: dict[str, Any]
) -> tuple[dict[str, Any], Completion | None, float, float | None]:
    """A whole answer from ``tier``: buffered from a stream when the client streams (so the
    backend's read timeout, not its total timeout, bounds a long answer), else one call."""
    if ctx.stream:
        body["stream_options"] = {"include_usage": True}
        step: dict[str, Any] = {}
        started = time.perf_counter()
        stream = await open_stream(ctx, tier, body, role="try", step=step)
        reading = time.perf_counter()
        try:
            payload = await collect(stream, tier)
        except BackendError as err:
            ctx.note({"step": "try", "tier": tier.name, "outcome": "error", "reason": err.code})
            raise
        finally:
            ctx.upstream_s += time.perf_counter() - reading
        ms = (time.perf_counter() - started) * 1000
        return payload, None, ms, step.get("cost_usd")
    called = await complete(ctx, tier, body, role="try")
    try:
        payload = orjson.loads(called.completion.body)
    except orjson.JSONDecodeError:
        payload = {}
    return payload, called.completion, called.ms, called.cost


def _drop_logprobs(payload: dict[str, Any]) -> None:
    for choice in payload.get("choices") or ():
        if isinstance(choice, dict):
            choice.pop("logprobs", None)


async def judge(
    ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], answer: Answer, *, final: bool
) -> Verdict:
    """Run the profile's checks on ``answer``, cheapest first (see the module doc)."""
    settings = plan.profile.sufficiency
    checks = settings.checks
    if answer.tool_calls:
        return Verdict(True, "tool call", 1.0)
    reasons: list[str] = []
    score = 1.0
    if HEURISTICS in checks:
        verdict = heuristic_verdict(
            answer, json_wanted=wants_json(body), min_chars=settings.min_chars, refusals=plan.refusals
        )
        if not verdict.passed:
            return verdict
    if LOGPROBS in checks:
        found = logprob_verdict(
            answer, quantile=settings.logprob_quantile, threshold=settings.logprob_threshold
        )
        if found is not None:
            if not found.passed:
                return found
            reasons.append(found.reason)
            score = min(score, found.score)
    if JUDGE in checks and not final and plan.judge is not None:
        graded = await _judge_call(ctx, plan, body, answer)
        if graded is not None:
            if not graded.passed:
                return graded
            reasons.append(graded.reason)
            score = min(score, graded.score)
    return Verdict(True, "; ".join(reasons) or "ok", score)


async def _judge_call(
    ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], answer: Answer
) -> Verdict | None:
    """Ask the judge tier; None (abstain) when it fails or gives no score."""
    tier = plan.judge
    assert tier is not None
    settings = plan.profile.sufficiency
    called = await ask(
        ctx,
        tier,
        judge_messages(body, answer),
        role="judge",
        max_tokens=JUDGE_MAX_TOKENS,
        think=False,
        timeout_s=settings.judge_timeout_ms / 1000,
    )
    if called is None:
        return None
    score = parse_score(content_of(called.completion.body))
    step: dict[str, Any] = {"step": "judge", "tier": tier.name, "ms": round(called.ms, 1)}
    step["outcome"] = f"{score:g}/10" if score is not None else "error"
    if score is None:
        step["reason"] = "no score in the answer"
    if called.cost is not None:
        step["cost_usd"] = called.cost
    ctx.note(step)
    return judge_verdict(score, settings.judge_threshold) if score is not None else None
