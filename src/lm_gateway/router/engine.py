"""Run a routed request: decide where it goes, then call the backends until it is answered.

The API layer calls :func:`serve` and gets back either a whole answer or a stream, both in the
internal OpenAI shape; it never picks a backend itself. Routing facts (profile, mode, tier, label,
each step with its reason, cost) are written into the request's traffic entry as soon as they are
known, so a failed request is logged with them, and ``X-LMG-Route`` is derived from the same entry.

Two phases per request, shared with ``POST /admin/route`` (:func:`explain`):

- :func:`decide`: dispatch resolves the model name (plus context window and cost ceiling); classify
  runs the pre-router and the classifier (see ``classify.py``); escalate finds its start tier;
- execution: one tier with optional failover up the ladder, or the escalation ladder
  (``escalate.py``), or the fixed reply.

``request_timeout_ms`` bounds both phases together (gate waits, retries, classifier and judge calls,
escalation steps), up to the first byte of a stream.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from lm_gateway.backends import Backend, BackendError, ChatStream, Completion
from lm_gateway.backends.demo import reply_backend
from lm_gateway.config.schema import Mode, ProfileConfig, TierConfig
from lm_gateway.http.deadline import deadline
from lm_gateway.protocols.openai import completion_chunk, encode_chunk, new_id, usage_of
from lm_gateway.router.classify import Choice, choose
from lm_gateway.router.context import RequestContext
from lm_gateway.router.dispatch import DEFAULT_REPLY, REPLY_TIER, RouteDecision, inject_system_prompt, route
from lm_gateway.router.escalate import Outcome, escalate, ladder, start_tier
from lm_gateway.router.explain import route_header
from lm_gateway.router.ladder import context_fit, cost_refusal, over_cost, skip_reason, tier_body
from lm_gateway.router.table import ProfilePlan, RoutingTable
from lm_gateway.router.upstream import Caller, ReplayStream, complete, default_call, open_stream
from lm_gateway.traffic import TrafficEntry


@dataclass(slots=True)
class Served:
    decision: RouteDecision
    completion: Completion | None = None
    stream: ChatStream | None = None
    # Time spent waiting for upstreams (calls, gate queues, retry back-off); the rest of a request's
    # time is the gateway's own.
    upstream_s: float = 0.0


async def serve(
    table: RoutingTable,
    backends: dict[str, Backend],
    body: dict[str, Any],
    *,
    bound_profile: str | None,
    expert: bool,
    stream: bool,
    trace: TrafficEntry,
    priority: int = 0,
    client: str | None = None,
    call: Caller = default_call,
) -> Served:
    """Route ``body`` and call the backends; raises ``RoutingError`` or ``BackendError``.

    ``priority`` is the request's ``X-LMG-Priority`` (higher first at gated backends); ``client`` is
    the name of the ``[[clients]]`` entry whose key matched (None for anonymous or public callers):
    it unlocks the entry's extra ``profiles`` and applies its escalation budget. ``call`` makes the
    answering call (dispatch and classify, failover included); see :data:`Caller`.
    """
    decision = route(table, body, bound_profile=bound_profile, expert=expert, client=client)
    if client is not None and table.budgets.shared is not None:
        await table.budgets.refresh(client)
    profile = decision.profile
    trace.profile, trace.mode = profile.name, decision.mode
    if profile.mode is Mode.REPLY:
        return await _reply(decision, profile, body, stream, trace)
    ctx = RequestContext(
        table, backends, trace, priority=priority, client=client, expert=expert, stream=stream
    )
    timeout = table.request_timeout_s
    if timeout is None or table.plan(profile).self_bounded:
        return await _run(ctx, decision, body, call)
    ctx.deadline_at = time.monotonic() + timeout
    try:
        with deadline(timeout):
            return await _run(ctx, decision, body, call)
    except TimeoutError as exc:
        raise BackendError(
            504,
            f"the request did not complete within request_timeout_ms ({timeout * 1000:g} ms)",
            code="gateway_timeout",
        ) from exc


async def _run(ctx: RequestContext, decision: RouteDecision, body: dict[str, Any], call: Caller) -> Served:
    plan = ctx.table.plan(decision.profile)
    if plan.profile.mode is Mode.DISPATCH:  # the hot path: no coroutine to decide
        choice = dispatch_choice(ctx, decision, plan, body)
    else:
        choice = await decide(ctx, decision, plan, body)
    if choice.mode is Mode.REPLY:
        return await _reply(decision, choice.plan.profile, body, ctx.stream, ctx.trace)
    _apply_prompts(body, choice)
    if choice.mode is Mode.ESCALATE:
        if isinstance(body.get("messages"), list):
            outcome = await escalate(ctx, choice.plan, body, choice.index)
            return _served(ctx, decision, outcome, body)
        # Not a chat (embeddings, legacy completions): no answer to judge, so the start tier serves it.
        choice = Choice(choice.plan, Mode.DISPATCH, choice.index)
    return await _answer(ctx, decision, choice, body, None if call is default_call else call)


def dispatch_choice(
    ctx: RequestContext, decision: RouteDecision, plan: ProfilePlan, body: dict[str, Any]
) -> Choice:
    """Dispatch: the named tier, moved up if the request does not fit its context window; refused
    when its estimated cost is above the profile's ceiling."""
    table = ctx.table
    index = table.tier_index[decision.tier.name]
    fitted = context_fit(ctx, plan, index, body)
    if plan.profile.cost_ceiling is not None and over_cost(ctx, plan, table.ladder[fitted], body):
        raise cost_refusal(plan)
    return Choice(plan, Mode.DISPATCH, fitted, prepared=fitted == index)


async def decide(
    ctx: RequestContext, decision: RouteDecision, plan: ProfilePlan, body: dict[str, Any]
) -> Choice:
    """Where the request goes, without calling the tier that will answer (see the module doc)."""
    mode = plan.profile.mode
    if mode is Mode.DISPATCH:
        return dispatch_choice(ctx, decision, plan, body)
    if mode is Mode.CLASSIFY:
        return await choose(ctx, plan, body)
    return Choice(plan, Mode.ESCALATE, start_tier(ctx, plan, body))


def _apply_prompts(body: dict[str, Any], choice: Choice) -> None:
    """Cascaded profiles' system prompts, then the final profile's class prompt (which ends first)."""
    for plan in choice.chain or ():
        if plan.profile.system_prompt:
            inject_system_prompt(body, plan.profile.system_prompt)
    if choice.label is not None:
        prompt = choice.plan.profile.class_prompts.get(choice.label)
        if prompt:
            inject_system_prompt(body, prompt)


async def _answer(
    ctx: RequestContext, decision: RouteDecision, choice: Choice, body: dict[str, Any], call: Caller | None
) -> Served:
    """Call the chosen tier; on a retryable failure, fail over up the ladder (within the ceiling)
    when the profile has ``failover = true``."""
    table = ctx.table
    plan = choice.plan
    tiers = table.ladder
    base = body
    if decision.think_added:  # route() put the first tier's think in: not for the others
        base = {key: value for key, value in body.items() if key != "think"}
    first = tiers[choice.index]
    call_body = body if choice.prepared else tier_body(table, base, first, choice.think)
    try:
        return await _final_call(ctx, decision, first, call_body, call)
    except BackendError as err:
        if not (plan.profile.failover and err.retryable):
            raise
        error = err
    for tier in tiers[choice.index + 1 : plan.ceiling + 1]:
        reason = skip_reason(ctx, plan, tier, base)
        if reason is not None:
            ctx.note({"step": "skip", "tier": tier.name, "reason": reason})
            continue
        if not ctx.step_up():
            ctx.note({"step": "budget", "tier": tier.name, "reason": "failover: escalation budget spent"})
            break
        ctx.note({"step": "failover", "tier": tier.name, "reason": error.code})
        try:
            return await _final_call(ctx, decision, tier, tier_body(table, base, tier, choice.think), call)
        except BackendError as err:
            if not err.retryable:
                raise
            error = err
    raise error


async def _final_call(
    ctx: RequestContext, decision: RouteDecision, tier: TierConfig, body: dict[str, Any], call: Caller | None
) -> Served:
    trace = ctx.trace
    trace.tier, trace.model, trace.backend = tier.name, tier.model, tier.backend
    decision.tier = tier
    via = (call, decision) if call is not None else None
    if ctx.stream:
        step: dict[str, Any] = {"step": "answer", "tier": tier.name}
        prefix = thinking_prefix(decision.profile, tier)
        stream = await open_stream(ctx, tier, body, prefix=prefix, step=step, via=via)
        if ctx.steps is not None:
            ctx.note(step)
        return Served(decision, stream=stream, upstream_s=ctx.upstream_s)
    called = await complete(ctx, tier, body, via=via)
    if ctx.steps is not None:
        step = {"step": "answer", "tier": tier.name, "ms": round(called.ms, 1)}
        if called.cost is not None:
            step["cost_usd"] = called.cost
        ctx.note(step)
    return Served(decision, completion=called.completion, upstream_s=ctx.upstream_s)


def _served(ctx: RequestContext, decision: RouteDecision, outcome: Outcome, body: dict[str, Any]) -> Served:
    """Escalate's answer as the client asked for it: as is, or a buffered answer replayed as a stream."""
    tier = outcome.tier
    trace = ctx.trace
    trace.tier, trace.model, trace.backend = tier.name, tier.model, tier.backend
    trace.escalated = outcome.escalated
    decision.tier = tier
    if outcome.stream is not None:
        return Served(decision, stream=outcome.stream, upstream_s=ctx.upstream_s)
    payload = outcome.payload or {}
    if ctx.stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        replay = ReplayStream(payload, include_usage, thinking_prefix(decision.profile, tier))
        return Served(decision, stream=replay, upstream_s=ctx.upstream_s)
    completion = outcome.completion
    if completion is None:
        completion = Completion(orjson.dumps(payload), *usage_of(payload))
    return Served(decision, completion=completion, upstream_s=ctx.upstream_s)


def thinking_prefix(profile: ProfileConfig, tier: TierConfig) -> bytes | None:
    """The experimental ``thinking_messages`` chunk sent first on a stream to ``tier``, if any."""
    messages = profile.thinking_messages.get(tier.name) if profile.thinking_messages else None
    if not messages:
        return None
    delta = {"role": "assistant", "content": random.choice(messages) + " "}
    chunk = completion_chunk(
        id=new_id("chatcmpl-thinking-"), model=tier.model, created=int(time.time()), delta=delta
    )
    return encode_chunk(chunk)


async def _reply(
    decision: RouteDecision, profile: ProfileConfig, body: dict[str, Any], stream: bool, trace: TrafficEntry
) -> Served:
    """A reply-mode profile (entry or cascade target): its fixed message, no backend."""
    backend = reply_backend(profile.reply_message or DEFAULT_REPLY)
    decision.tier = REPLY_TIER
    trace.tier, trace.model, trace.backend = REPLY_TIER.name, REPLY_TIER.model, backend.name
    if stream:
        return Served(decision, stream=await backend.chat_stream(body, REPLY_TIER))
    return Served(decision, completion=await backend.chat(body, REPLY_TIER))


# -- POST /admin/route --------------------------------------------------------------------------------


async def explain(
    table: RoutingTable,
    backends: dict[str, Backend],
    body: dict[str, Any],
    *,
    bound_profile: str | None = None,
    expert: bool = False,
    client: str | None = None,
    priority: int = 0,
    stream: bool = False,
) -> dict[str, Any]:
    """The routing decision for ``body`` without calling the tier that would answer it.

    Classify mode may call its classifier (and fill its cache). Raises ``RoutingError`` as
    :func:`serve` would.
    """
    model = body.get("model")
    trace = TrafficEntry(
        id="explain",
        started=time.time(),
        client=client or "admin",
        profile=None,
        requested_model=model if isinstance(model, str) else None,
        endpoint="/admin/route",
        stream=stream,
    )
    decision = route(table, body, bound_profile=bound_profile, expert=expert, client=client)
    trace.profile, trace.mode = decision.profile.name, decision.mode
    result: dict[str, Any] = {"profile": decision.profile.name, "mode": decision.mode}
    if decision.profile.mode is Mode.REPLY:
        trace.tier = REPLY_TIER.name
        return {**result, "tier": REPLY_TIER.name, "route": [], "header": route_header(trace)}
    ctx = RequestContext(
        table, backends, trace, priority=priority, client=client, expert=expert, stream=stream
    )
    choice = await decide(ctx, decision, table.plan(decision.profile), body)
    result["final_profile"] = choice.plan.profile.name
    result["served_as"] = choice.mode.value
    if choice.mode is Mode.ESCALATE:
        tiers = ladder(ctx, choice.plan, body, choice.index)
        result["ladder"] = [tier.name for tier in tiers]
        tier = tiers[0] if tiers else None
    elif choice.mode is Mode.REPLY:
        tier = REPLY_TIER
    else:
        tier = table.ladder[choice.index]
        if choice.plan.profile.failover:
            result["failover"] = [t.name for t in table.ladder[choice.index + 1 : choice.plan.ceiling + 1]]
    if tier is not None:
        trace.tier = tier.name
        result |= {"tier": tier.name, "model": tier.model, "backend": tier.backend}
    if choice.think is not None:
        result["think"] = choice.think
    _apply_prompts(body, choice)
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        result["system_prompt"] = first.get("content")
    result |= {
        "class_label": trace.class_label,
        "cost_usd": trace.cost_usd,
        "route": trace.route or [],
        "header": route_header(trace),
    }
    return result
