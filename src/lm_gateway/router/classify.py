"""Classify mode: pick the tier from the request, with the zero-call pre-router first and a small
model second.

Order, each step written into the route:

1. the pre-router's first matching rule, if any (no call at all);
2. no classifier configured (a pre-router-only profile), or nothing to classify (``classifier_context
   = 0``, no user turn): the ``classifier_fallback`` tier, else the classifier's own tier;
3. the classifier's label, from the per-conversation cache or from one call bounded by
   ``classifier_timeout_ms``; a failed call (error, timeout, open circuit, no label) goes to
   ``classifier_fallback``, else to the middle candidate, and the route says which and why;
4. the first rule (highest priority first) whose ``when`` tags all match: a tier or alias, or another
   profile (a cascade, run in *that* profile's mode; a profile already on the path is skipped, so a
   cycle that slipped past load-time validation cannot loop);
5. otherwise the label: an exact tier name or alias, else a tier-name suffix, clamped to the ceiling
   (lm-gateway-rs sent an above-ceiling label to the middle); an unknown label goes to the middle;
   a conversation carrying tool results moves off the cheapest tier (lm-gateway-rs behaviour).

Then the client's escalation budget, the context window and the cost ceiling have their say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_gateway.config.schema import Mode
from lm_gateway.router.context import RequestContext
from lm_gateway.router.escalate import start_tier
from lm_gateway.router.labels import (
    Classification,
    class_label,
    classifier_input,
    conversation_keys,
    match_tags,
    parse_classification,
)
from lm_gateway.router.ladder import context_fit, explicit_target, spend_step_up, within_cost
from lm_gateway.router.prerouter import pre_route
from lm_gateway.router.table import ProfilePlan
from lm_gateway.router.upstream import ask, content_of

MAX_CASCADE_DEPTH = 8
CLASSIFIER_MAX_TOKENS = 128
CLASSIFIER_THINK_MAX_TOKENS = 2048


@dataclass(slots=True)
class Choice:
    """Where a routed request goes: the final profile (a cascade may change it), how it is served
    there (``mode``: dispatch to ``index``, escalate from ``index``, or reply), the ``-think``
    override, the class label, and the cascaded profiles whose prompts apply."""

    plan: ProfilePlan
    mode: Mode
    index: int = 0
    think: bool | None = None
    label: str | None = None
    chain: list[ProfilePlan] | None = None  # cascaded profiles, outermost first
    # Dispatch only: the body is already rewritten for this tier by ``dispatch.route``.
    prepared: bool = False


async def choose(
    ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], visited: tuple[str, ...] = ()
) -> Choice:
    """Run classify mode for ``plan`` (see the module doc); may call the classifier."""
    visited = (*visited, plan.profile.name)
    table = ctx.table
    rule = pre_route(plan.pre_rules, body)
    if rule is not None:
        index = explicit_target(ctx, plan, table.tier_index[rule.tier.name], "pre-router target")
        ctx.note({"step": "pre_router", "tier": rule.tier.name, "outcome": f"rule {rule.index}"})
        return settle(ctx, plan, body, index, "pre-router")
    if plan.classifier is None:
        return fallback(ctx, plan, body, "no pre-router rule matched")
    text = classifier_input(body.get("messages"), plan.profile.classifier_context)
    if text is None:
        index = table.tier_index[plan.classifier.name]
        index = index if index <= plan.ceiling else 0
        ctx.note(
            {"step": "classifier", "tier": plan.classifier.name, "outcome": "skipped", "reason": "no input"}
        )
        return settle(ctx, plan, body, index, "classifier tier")
    result = await classification(ctx, plan, body, text)
    if result is None:
        return fallback(ctx, plan, body, "classifier failed")
    label = class_label(result, plan.profile.class_prompts)
    ctx.trace.class_label = label
    tags = match_tags(result, label)
    for rule_ in plan.rules:
        if not rule_.matches(tags):
            continue
        target = table.profiles.get(rule_.route_to)
        if target is not None:
            if target.name in visited or len(visited) >= MAX_CASCADE_DEPTH:
                ctx.note(
                    {"step": "rule", "tier": rule_.route_to, "outcome": "skipped", "reason": "cascade cycle"}
                )
                continue
            ctx.note({"step": "rule", "tier": rule_.route_to, "outcome": f"rule {rule_.index} cascade"})
            choice = await cascade(ctx, table.plan(target), body, visited)
            choice.think = choice.think if choice.think is not None else (result.think or None)
            choice.label = choice.label or label
            return choice
        tier = table.resolve(rule_.route_to)
        if tier is None:
            continue
        ctx.note({"step": "rule", "tier": tier.name, "outcome": f"rule {rule_.index}"})
        index = explicit_target(ctx, plan, table.tier_index[tier.name], "rule target")
        return settle(ctx, plan, body, index, "rule target", think=result.think or None, label=label)
    index = label_tier(ctx, plan, result.label)
    if index == 0 and plan.ceiling >= 1 and _has_tool_results(body):
        index = 1
        ctx.note(
            {"step": "tools", "tier": table.ladder[1].name, "reason": "tool results in the conversation"}
        )
    return settle(ctx, plan, body, index, "label", think=result.think or None, label=label)


async def cascade(
    ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], visited: tuple[str, ...]
) -> Choice:
    """Hand the request to another profile, which routes it in its own mode."""
    mode = plan.profile.mode
    if mode is Mode.CLASSIFY:
        choice = await choose(ctx, plan, body, visited)
    elif mode is Mode.DISPATCH:
        choice = settle(ctx, plan, body, default_index(ctx, plan), "cascade")
    elif mode is Mode.ESCALATE:
        choice = Choice(plan, mode, start_tier(ctx, plan, body))
    else:
        choice = Choice(plan, mode)
    choice.chain = [plan, *(choice.chain or ())]
    return choice


def default_index(ctx: RequestContext, plan: ProfilePlan) -> int:
    """The tier a profile sends requests to when named as a model: its classifier tier, else its
    ceiling, else the first tier (as ``dispatch.route`` does)."""
    table = ctx.table
    profile = plan.profile
    for name in (profile.classifier, profile.max_auto_tier):
        if name in table.tier_index:
            return table.tier_index[name]
    return 0


def label_tier(ctx: RequestContext, plan: ProfilePlan, label: str) -> int:
    table = ctx.table
    index = table.label_index.get(label)
    how = "exact"
    if index is None:
        index, how = table.suffix_index.get(label), "suffix"
    if index is None:
        index, how = plan.middle, "unknown label, middle tier"
    elif index > plan.ceiling:
        index, how = plan.ceiling, "above the ceiling, clamped"
    ctx.note({"step": "label", "tier": table.ladder[index].name, "outcome": label, "reason": how})
    return index


def fallback(ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], why: str) -> Choice:
    table = ctx.table
    if plan.fallback is not None:
        index = explicit_target(ctx, plan, table.tier_index[plan.fallback.name], "classifier_fallback")
        how = "classifier_fallback"
    else:
        index, how = plan.middle, "middle tier (no classifier_fallback)"
    ctx.note({"step": "fallback", "tier": table.ladder[index].name, "reason": f"{why}: {how}"})
    return settle(ctx, plan, body, index, "fallback")


def settle(
    ctx: RequestContext,
    plan: ProfilePlan,
    body: dict[str, Any],
    index: int,
    what: str,
    *,
    think: bool | None = None,
    label: str | None = None,
) -> Choice:
    """Apply the client's budget, the context window and the cost ceiling to a chosen tier."""
    index = spend_step_up(ctx, index, what)
    index = context_fit(ctx, plan, index, body)
    index = within_cost(ctx, plan, index, body)
    return Choice(plan, Mode.DISPATCH, index, think, label)


def _has_tool_results(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(message, dict) and message.get("role") == "tool" for message in messages
    )


async def classification(
    ctx: RequestContext, plan: ProfilePlan, body: dict[str, Any], text: str
) -> Classification | None:
    """The request's classification: cached for this conversation, else from the classifier.

    With ``classifier_every_turn = false`` (the default) a follow-up turn reuses the label of the
    conversation it continues; otherwise only an identical request does.
    """
    cache = plan.cache
    if cache is None:
        return await run_classifier(ctx, plan, text)
    whole, prefix = conversation_keys(body.get("messages"))
    found = cache.get(whole)
    if found is None and prefix is not None and not plan.profile.classifier_every_turn:
        found = cache.get(prefix)
    assert plan.classifier is not None
    if found is not None:
        cache.hits += 1
        cache.put(whole, found)
        ctx.note(
            {"step": "classifier", "tier": plan.classifier.name, "outcome": found.label, "reason": "cached"}
        )
        return found
    cache.misses += 1
    result = await run_classifier(ctx, plan, text)
    if result is not None:
        cache.put(whole, result)
    return result


async def run_classifier(ctx: RequestContext, plan: ProfilePlan, text: str) -> Classification | None:
    """One classifier call (no retries: a slow or failing classifier must not hold the request up)."""
    tier = plan.classifier
    assert tier is not None
    profile = plan.profile
    think = bool(profile.classifier_think)
    called = await ask(
        ctx,
        tier,
        [{"role": "system", "content": plan.prompt}, {"role": "user", "content": text}],
        role="classifier",
        max_tokens=CLASSIFIER_THINK_MAX_TOKENS if think else CLASSIFIER_MAX_TOKENS,
        think=think,
        timeout_s=profile.classifier_timeout_ms / 1000,
    )
    if called is None:
        return None
    result = parse_classification(content_of(called.completion.body), plan.known_labels)
    step: dict[str, Any] = {
        "step": "classifier",
        "tier": tier.name,
        "outcome": result.label if result else "error",
    }
    if result is None:
        step["reason"] = "no label in the answer"
    step["ms"] = round(called.ms, 1)
    if called.cost is not None:
        step["cost_usd"] = called.cost
    ctx.note(step)
    return result
