"""What upstream calls cost, from the tiers' declared prices, and the running totals.

Every call a request makes is charged (classifier, judge, abandoned escalation tiers and the final
answer) to the tier that made it, from the usage the backend reported or, when it reported none, from
the token estimates. A tier without prices costs nothing and leaves ``cost_usd`` unknown (None) unless
another call of the request was priced.

:class:`CostLedger` aggregates the traffic log's entries per tier (from each call in the route),
profile and client; it subscribes to the traffic log (``traffic.subscribe(ledger.record)``).
"""

from __future__ import annotations

from typing import Any

from lm_gateway.config.schema import TierConfig
from lm_gateway.traffic import TrafficEntry

PER_MTOK = 1_000_000
# Completion length assumed by cost ceilings when the request sets no max_tokens.
DEFAULT_COMPLETION_TOKENS = 512
# Anonymous clients are keyed by address: past this many keys the rest share one bucket.
MAX_KEYS = 1000
OTHER = "(other)"


def is_priced(tier: TierConfig) -> bool:
    return tier.input_cost_per_mtok is not None or tier.output_cost_per_mtok is not None


def call_cost(tier: TierConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for one call on ``tier``; None when the tier declares no prices."""
    if not is_priced(tier):
        return None
    return (
        prompt_tokens * (tier.input_cost_per_mtok or 0.0)
        + completion_tokens * (tier.output_cost_per_mtok or 0.0)
    ) / PER_MTOK


def estimated_cost(tier: TierConfig, prompt_tokens: int, max_tokens: int | None) -> float:
    """The cost a call on ``tier`` may reach (for ``cost_ceiling``): unpriced tiers cost 0."""
    return call_cost(tier, prompt_tokens, max_tokens or DEFAULT_COMPLETION_TOKENS) or 0.0


class _Total:
    __slots__ = ("cost_usd", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.cost_usd = 0.0

    def add(self, cost: float) -> None:
        self.requests += 1
        self.cost_usd += cost

    def view(self) -> dict[str, Any]:
        return {"requests": self.requests, "cost_usd": round(self.cost_usd, 6)}


class CostLedger:
    """Cost totals per tier (every call, from the route), per profile and per client (per request)."""

    def __init__(self) -> None:
        self.tiers: dict[str, _Total] = {}
        self.profiles: dict[str, _Total] = {}
        self.clients: dict[str, _Total] = {}
        self.total_usd = 0.0

    def record(self, entry: TrafficEntry) -> None:
        cost = entry.cost_usd
        if not cost:
            return
        self.total_usd += cost
        _bump(self.profiles, entry.profile or "", cost)
        _bump(self.clients, entry.client, cost)
        charged = False
        for step in entry.route or ():
            tier, step_cost = step.get("tier"), step.get("cost_usd")
            if isinstance(tier, str) and isinstance(step_cost, float | int) and step_cost:
                _bump(self.tiers, tier, float(step_cost))
                charged = True
        if not charged:  # a plain dispatch keeps no route: its one call was its tier's
            _bump(self.tiers, entry.tier or "", cost)

    def view(self) -> dict[str, Any]:
        return {
            "total_usd": round(self.total_usd, 6),
            "per_tier": {name: total.view() for name, total in self.tiers.items()},
            "per_profile": {name: total.view() for name, total in self.profiles.items()},
            "per_client": {name: total.view() for name, total in self.clients.items()},
        }


def _bump(totals: dict[str, _Total], key: str, cost: float) -> None:
    total = totals.get(key)
    if total is None:
        if len(totals) >= MAX_KEYS:
            key = OTHER
        total = totals.get(key) or totals.setdefault(key, _Total())
    total.add(cost)
