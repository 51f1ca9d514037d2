"""Dispatch routing: pick the profile, resolve the model name to a tier, apply the profile's gates
and prompt. Works on the internal (OpenAI-shaped) request dict; never sees wire bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_gateway.config.schema import Mode, ProfileConfig, TierConfig
from lm_gateway.router.table import RoutingTable

DEFAULT_HINT = "hint:fast"
DEFAULT_REPLY = "This request cannot be processed. No backend is configured for this profile."
MAX_LISTED_NAMES = 30


class RoutingError(Exception):
    """A request that cannot be routed, with the status and OpenAI error fields to answer with."""

    def __init__(self, status: int, message: str, *, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_


# The pseudo-tier of reply-mode profiles: answered by a local backend with the profile's message.
REPLY_TIER = TierConfig(name="reply", backend="reply", model="reply")


@dataclass(slots=True)
class RouteDecision:
    """Where a request goes. ``tier`` starts as the tier the model name resolved to and ends as the
    tier that answered; ``think_added`` says the tier's ``think`` was put in the body by routing."""

    profile: ProfileConfig
    requested_model: str
    mode: str
    tier: TierConfig
    think_added: bool = False


def route(
    table: RoutingTable,
    body: dict[str, Any],
    *,
    bound_profile: str | None,
    expert: bool,
    client: str | None = None,
) -> RouteDecision:
    """Pick the profile, resolve the model name, apply the expert gate and the profile's prompt.

    In dispatch mode the body is rewritten for the tier (``model``, ``think``). In classify and
    escalate modes the mode chooses the tier, so the model name only selects the profile (when it
    names one) or is checked (a tier or alias, through the expert gate), as in lm-gateway-rs.

    ``bound_profile`` is the profile of the client's key (or the public profile); a bound client may
    not switch to another profile by naming it as the model, unless ``client`` (the name of the
    ``[[clients]]`` entry whose key matched) lists that profile in its ``profiles``.
    """
    model = body.get("model")
    if model is None:
        model = DEFAULT_HINT
    elif not isinstance(model, str) or not model:
        raise RoutingError(400, "'model' must be a non-empty string", code="invalid_model")

    profile = table.profile(bound_profile)
    named = table.profiles.get(model)
    if named is not None:
        if bound_profile is not None and named.name != bound_profile:
            _check_profile_allowed(table, bound_profile, client, named.name)
        profile = named

    if profile.mode is Mode.REPLY:
        return RouteDecision(profile, model, "reply", tier=REPLY_TIER)

    tier = _resolve_tier(table, profile, model, named is not None)
    dispatch = profile.mode is Mode.DISPATCH
    if dispatch or named is None:
        _check_expert_gate(table, profile, tier, expert)
    if profile.system_prompt:
        inject_system_prompt(body, profile.system_prompt)
    if not dispatch:
        return RouteDecision(profile, model, profile.mode.value, tier=tier)
    body["model"] = tier.model
    think_added = tier.think is not None and "think" not in body and table.understands_think(tier)
    if think_added:
        body["think"] = tier.think
    return RouteDecision(profile, model, "dispatch", tier=tier, think_added=think_added)


def _check_profile_allowed(table: RoutingTable, bound: str, client: str | None, wanted: str) -> None:
    entry = table.clients.get(client) if client is not None else None
    # The entry must also be bound to this profile: a name alone never widens access.
    if entry is not None and entry.profile == bound and wanted in entry.profiles:
        return
    raise RoutingError(
        403,
        f"your client key is bound to profile '{bound}' and may not use profile '{wanted}'",
        code="profile_not_allowed",
        type_="permission_error",
    )


def _resolve_tier(
    table: RoutingTable, profile: ProfileConfig, model: str, profile_as_model: bool
) -> TierConfig:
    if profile_as_model:
        tier = table.tiers.get(profile.classifier) or table.tiers.get(profile.max_auto_tier)
        if tier is None and table.config.tiers:
            tier = table.config.tiers[0]
        if tier is None:
            raise RoutingError(404, f"profile '{model}' has no tier to route to", code="model_not_found")
        return tier
    tier = table.aliases.get(model) or table.tiers.get(model)
    if tier is not None:
        return tier
    if profile.unknown_model_fallback:
        fallback = table.tiers.get(profile.classifier)
        if fallback is not None:
            return fallback
    names = table.model_names
    listed = ", ".join(names[:MAX_LISTED_NAMES]) + (", ..." if len(names) > MAX_LISTED_NAMES else "")
    raise RoutingError(
        404,
        f"model '{model[:200]}' is not known to this gateway; use a tier, alias or profile name ({listed})",
        code="model_not_found",
    )


def _check_expert_gate(table: RoutingTable, profile: ProfileConfig, tier: TierConfig, expert: bool) -> None:
    """Tiers above the profile's ceiling need ``X-LMG-Expert: true`` when the profile says so."""
    if expert or not profile.expert_requires_flag or not profile.max_auto_tier:
        return
    ceiling = table.tier_index.get(profile.max_auto_tier)
    position = table.tier_index.get(tier.name)
    if ceiling is not None and position is not None and position > ceiling:
        raise RoutingError(
            403,
            f"tier '{tier.name}' is above this profile's ceiling '{profile.max_auto_tier}'; "
            "send the header 'X-LMG-Expert: true' to use it",
            code="expert_flag_required",
            type_="permission_error",
        )


def inject_system_prompt(body: dict[str, Any], prompt: str) -> None:
    """Put the profile's prompt first, keeping an existing system message whole (string or parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        content = first.get("content")
        if isinstance(content, list):
            merged: Any = [{"type": "text", "text": prompt}, *content]
        elif isinstance(content, str) and content:
            merged = f"{prompt}\n\n{content}"
        else:
            merged = prompt
        messages[0] = {**first, "content": merged}
    else:
        messages.insert(0, {"role": "system", "content": prompt})
