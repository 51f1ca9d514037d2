"""Per-client escalation budgets: how often a client's requests may be moved up the ladder.

The point is abuse resistance: a client that crafts requests so that every one of them is labelled
"hard", bumped by a huge context, matched by an expensive rule or escalated step after step would
otherwise send all its traffic to the top tier. ``[[clients]] max_escalations_per_minute = N`` gives
the key a token bucket of N step-ups, refilled continuously at N per minute. Once it is empty,
automatic routing keeps that client's requests on the cheapest candidate tier (and escalate mode
stops stepping up) until it refills; the route says why.

Several instances (``gateway.redis_url``) share each client's budget through a
:class:`SharedBudgets` store: before a budgeted client's request is routed, its local budget takes the
shared level (:meth:`Budgets.refresh`, one round trip), and every step spent is also spent in the
shared bucket. Routing itself stays synchronous and local. The budget is exact across instances
except for requests routed at the same instant on different instances (each saw the same level).
"""

from __future__ import annotations

import time
from typing import Protocol

REFILL_WINDOW_S = 60.0


class SharedBudgets(Protocol):
    """Where the budgets of a cluster live (implemented over Redis in ``lm_gateway.cluster``)."""

    async def level(self, client: str, per_minute: int) -> float | None:
        """The client's shared level now; None when the store cannot tell (the local one is used)."""
        ...

    def spend(self, client: str, per_minute: int) -> None:
        """Spend one step in the shared bucket (in the background: routing never waits for it)."""
        ...


class EscalationBudget:
    __slots__ = ("_level", "_stamp", "capacity", "client", "shared")

    def __init__(self, per_minute: int, client: str = "", shared: SharedBudgets | None = None) -> None:
        self.capacity = float(per_minute)
        self._level = float(per_minute)
        self._stamp = time.monotonic()
        self.client = client
        self.shared = shared

    def adopt(self, level: float) -> None:
        """Take the shared level (refilled to now by the store)."""
        self._level = min(self.capacity, level)
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
        if self.shared is not None:
            self.shared.spend(self.client, int(self.capacity))
        return True


class Budgets:
    """The budgets of the configured clients that have one, created on first use."""

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = limits
        self._budgets: dict[str, EscalationBudget] = {}
        self.shared: SharedBudgets | None = None  # set by the gateway when it has a cluster store

    async def refresh(self, client: str) -> None:
        """Bring ``client``'s budget to the shared level (no-op without a shared store or budget)."""
        shared = self.shared
        if shared is None:
            return
        budget = self.for_client(client)
        if budget is None:
            return
        level = await shared.level(client, int(budget.capacity))
        if level is not None:
            budget.adopt(level)

    def for_client(self, client: str | None) -> EscalationBudget | None:
        if client is None:
            return None
        budget = self._budgets.get(client)
        if budget is None:
            limit = self._limits.get(client)
            if limit is None:
                return None
            budget = self._budgets[client] = EscalationBudget(limit, client, self.shared)
        return budget
