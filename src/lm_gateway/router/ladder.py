"""Moves on the tier ladder that every mode shares, each with its reason written into the route.

The rules that keep automatic routing in bounds live here, once:

- automatic choices (classifier labels, context bumps, escalation, failover) never go above the
  profile's ceiling (``max_auto_tier``), unless the request is already above it;
- explicit targets written by the operator (rules, pre-router) may go above the ceiling, except
  when the profile has ``expert_requires_flag`` and the client did not send the flag: then they are
  clamped to the ceiling, so a request cannot talk its way past the gate (lm-gateway-rs let rule
  targets and context bumps through);
- every move above the cheapest tier spends the client's escalation budget, if it has one;
- ``cost_ceiling`` skips (or steps down from) tiers whose estimated cost is above it.
"""

from __future__ import annotations

from typing import Any

from lm_gateway.config.schema import TierConfig
from lm_gateway.protocols.openai import max_tokens_of
from lm_gateway.router.context import RequestContext
from lm_gateway.router.cost import estimated_cost
from lm_gateway.router.dispatch import RoutingError
from lm_gateway.router.table import ProfilePlan, RoutingTable
from lm_gateway.router.upstream import is_open


def tier_body(
    table: RoutingTable, body: dict[str, Any], tier: TierConfig, think: bool | None
) -> dict[str, Any]:
    """A copy of ``body`` for ``tier``: its model, and ``think`` for backends that take it (the
    label's ``-think`` override, else the tier's setting unless the client sent one)."""
    out = dict(body)
    out["model"] = tier.model
    if table.understands_think(tier):
        if think is not None:
            out["think"] = think
        elif tier.think is not None and "think" not in body:
            out["think"] = tier.think
    return out


def explicit_target(ctx: RequestContext, plan: ProfilePlan, index: int, what: str) -> int:
    """An operator-written target (rule, pre-router, fallback): kept, unless it is above the ceiling
    while the profile requires the expert flag and the client did not send it."""
    if index <= plan.ceiling or ctx.expert or not plan.profile.expert_requires_flag:
        return index
    ceiling = ctx.table.ladder[plan.ceiling].name
    ctx.note({"step": "clamp", "tier": ceiling, "reason": f"{what} is above the ceiling; no expert flag"})
    return plan.ceiling


def spend_step_up(ctx: RequestContext, index: int, what: str) -> int:
    """A choice above the cheapest tier spends one step from the client's budget; without budget
    the request stays on the cheapest tier."""
    if index == 0 or ctx.step_up():
        return index
    ctx.note(
        {"step": "budget", "tier": ctx.table.ladder[0].name, "reason": f"{what}: escalation budget spent"}
    )
    return 0


def context_fit(ctx: RequestContext, plan: ProfilePlan, index: int, body: dict[str, Any]) -> int:
    """Move up from ``index`` to the first tier whose context window holds the request.

    Costs nothing when the tier has no window. The search stops at the ceiling (or at the top of the
    ladder when the request is already above the ceiling); when nothing fits, the highest allowed
    tier is used and the route says so.
    """
    ladder = ctx.table.ladder
    limit = ladder[index].max_context_tokens
    if limit is None:
        return index
    need = ctx.estimate(body)
    if need <= limit:
        return index
    top = plan.ceiling if index <= plan.ceiling else len(ladder) - 1
    target, reason = top, f"~{need} tokens fit no tier up to {ladder[top].name}"
    for candidate in range(index + 1, top + 1):
        window = ladder[candidate].max_context_tokens
        if window is None or need <= window:
            target, reason = candidate, f"~{need} tokens > {limit} on {ladder[index].name}"
            break
    if target == index:
        ctx.note({"step": "context", "tier": ladder[index].name, "reason": reason})
        return index
    if not ctx.step_up():
        ctx.note(
            {"step": "budget", "tier": ladder[index].name, "reason": "context bump: escalation budget spent"}
        )
        return index
    ctx.note({"step": "context", "tier": ladder[target].name, "outcome": "bumped", "reason": reason})
    return target


def over_cost(ctx: RequestContext, plan: ProfilePlan, tier: TierConfig, body: dict[str, Any]) -> bool:
    ceiling = plan.profile.cost_ceiling
    if ceiling is None:
        return False
    return estimated_cost(tier, ctx.estimate(body), max_tokens_of(body)) > ceiling


def within_cost(ctx: RequestContext, plan: ProfilePlan, index: int, body: dict[str, Any]) -> int:
    """Step down from ``index`` to the first tier under the profile's cost ceiling (a hard limit)."""
    if plan.profile.cost_ceiling is None:
        return index
    ladder = ctx.table.ladder
    for candidate in range(index, -1, -1):
        if not over_cost(ctx, plan, ladder[candidate], body):
            if candidate != index:
                ctx.note(
                    {
                        "step": "cost",
                        "tier": ladder[candidate].name,
                        "reason": f"{ladder[index].name} over cost_ceiling",
                    }
                )
            return candidate
    raise cost_refusal(plan)


def cost_refusal(plan: ProfilePlan) -> RoutingError:
    return RoutingError(
        403,
        f"the estimated cost of this request is above profile '{plan.profile.name}' cost_ceiling "
        f"({plan.profile.cost_ceiling:g} USD) on every tier it may use; send a smaller request or max_tokens",
        code="cost_ceiling_exceeded",
        type_="permission_error",
    )


def skip_reason(ctx: RequestContext, plan: ProfilePlan, tier: TierConfig, body: dict[str, Any]) -> str | None:
    """Why an automatic move (failover, escalation) should pass over ``tier``, or None to try it."""
    if is_open(ctx, tier):
        return "circuit open"
    window = tier.max_context_tokens
    if window is not None and ctx.estimate(body) > window:
        return "context too small"
    if over_cost(ctx, plan, tier, body):
        return "over cost ceiling"
    return None
