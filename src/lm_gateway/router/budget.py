"""Per-client escalation budgets: how often a client's requests may be moved up the ladder.

The point is abuse resistance: a client that crafts requests so that every one of them is labelled
"hard", bumped by a huge context, matched by an expensive rule or escalated step after step would
otherwise send all its traffic to the top tier. ``[[clients]] max_escalations_per_minute = N`` gives
the key a token bucket of N step-ups, refilled continuously at N per minute. Once it is empty,
automatic routing keeps that client's requests on the cheapest candidate tier (and escalate mode
stops stepping up) until it refills; the route says why.
"""

from __future__ import annotations

import time

REFILL_WINDOW_S = 60.0


class EscalationBudget:
    __slots__ = ("_level", "_stamp", "capacity")

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self._level = float(per_minute)
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.capacity / REFILL_WINDOW_S)
        self._stamp = now

    def available(self) -> bool:
        self._refill()
        return self._level >= 1.0

    def take(self) -> bool:
        """Spend one step-up; False (nothing spent) when the budget is empty."""
        self._refill()
        if self._level < 1.0:
            return False
        self._level -= 1.0
        return True


class Budgets:
    """The budgets of the configured clients that have one, created on first use."""

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = limits
        self._budgets: dict[str, EscalationBudget] = {}

    def for_client(self, client: str | None) -> EscalationBudget | None:
        if client is None:
            return None
        budget = self._budgets.get(client)
        if budget is None:
            limit = self._limits.get(client)
            if limit is None:
                return None
            budget = self._budgets[client] = EscalationBudget(limit)
        return budget
