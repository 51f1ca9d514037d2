"""The state of one routed request while the modes work on it: who asked, with which priority, the
deadline, the explainable route built so far, and the running cost.

One small object per request. The route list is only created when a mode has something to say
(a plain dispatch that succeeds at once records no steps: its ``X-LMG-Route`` is derived from the
traffic entry), and the token estimate is only computed when gating or a cost ceiling asks for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lm_gateway.router.budget import EscalationBudget
from lm_gateway.router.cost import call_cost
from lm_gateway.router.tokens import estimate_request_tokens

if TYPE_CHECKING:
    from lm_gateway.backends import Backend
    from lm_gateway.config.schema import TierConfig
    from lm_gateway.router.table import RoutingTable
    from lm_gateway.traffic import TrafficEntry

_UNSET = object()


class RequestContext:
    __slots__ = (
        "_budget",
        "_estimate",
        "backends",
        "client",
        "deadline_at",
        "expert",
        "priority",
        "steps",
        "stream",
        "table",
        "trace",
        "upstream_s",
    )

    def __init__(
        self,
        table: RoutingTable,
        backends: dict[str, Backend],
        trace: TrafficEntry,
        *,
        priority: int = 0,
        client: str | None = None,
        expert: bool = False,
        stream: bool = False,
    ) -> None:
        self.table = table
        self.backends = backends
        self.trace = trace
        self.priority = priority
        self.client = client
        self.expert = expert
        self.stream = stream
        self.steps: list[dict[str, Any]] | None = None
        # Time spent waiting (upstream calls, gate queues, retry back-off): not the gateway's own work.
        self.upstream_s = 0.0
        self.deadline_at: float | None = None  # time.monotonic() based
        self._estimate: int | None = None
        self._budget: Any = _UNSET

    def note(self, step: dict[str, Any]) -> dict[str, Any]:
        """Append a step to the route (kept in the traffic entry as it grows) and return it."""
        if self.steps is None:
            self.steps = []
            self.trace.route = self.steps
        self.steps.append(step)
        return step

    def estimate(self, body: dict[str, Any]) -> int:
        """Estimated prompt tokens of the request (computed once)."""
        if self._estimate is None:
            self._estimate = estimate_request_tokens(body)
        return self._estimate

    def remaining_s(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - time.monotonic()

    def charge(self, tier: TierConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Add one call's cost to the request's total; returns it (None for an unpriced tier)."""
        cost = call_cost(tier, prompt_tokens, completion_tokens)
        if cost is not None:
            self.trace.cost_usd = (self.trace.cost_usd or 0.0) + cost
        return cost

    @property
    def budget(self) -> EscalationBudget | None:
        if self._budget is _UNSET:
            self._budget = self.table.budgets.for_client(self.client)
        budget: EscalationBudget | None = self._budget
        return budget

    def may_step_up(self) -> bool:
        """Whether the client's escalation budget allows one more step up (without spending it)."""
        budget = self.budget
        return budget is None or budget.available()

    def step_up(self) -> bool:
        """Spend one step up from the client's budget; False when it is exhausted."""
        budget = self.budget
        return budget is None or budget.take()
