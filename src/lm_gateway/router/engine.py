"""Run a routed request: decide (``dispatch.route``), then call the chosen backend.

The API layer calls :func:`serve` and gets back either a whole answer or a stream, both in the
internal OpenAI shape; it never picks a backend itself. Routing facts (tier, backend, mode) are
written into the request's traffic entry as soon as they are known, so failures are logged with them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lm_gateway.backends import Backend, ChatStream, Completion
from lm_gateway.backends.demo import reply_backend
from lm_gateway.config.schema import Mode
from lm_gateway.router.dispatch import DEFAULT_REPLY, RouteDecision, route
from lm_gateway.router.table import RoutingTable
from lm_gateway.traffic import TrafficEntry


@dataclass(slots=True)
class Served:
    decision: RouteDecision
    completion: Completion | None = None
    stream: ChatStream | None = None
    # Time spent waiting for upstreams; the rest of a request's time is the gateway's own.
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
) -> Served:
    """Route ``body`` and call the backend; raises ``RoutingError`` or ``BackendError``."""
    decision = route(table, body, bound_profile=bound_profile, expert=expert)
    tier = decision.tier
    trace.profile, trace.mode = decision.profile.name, decision.mode
    trace.tier, trace.model = tier.name, tier.model
    backend = _backend_for(decision, backends)
    trace.backend = backend.name
    served = Served(decision)
    started = time.perf_counter()
    if stream:
        served.stream = await backend.chat_stream(body, tier)
    else:
        served.completion = await backend.chat(body, tier)
    served.upstream_s = time.perf_counter() - started
    return served


def _backend_for(decision: RouteDecision, backends: dict[str, Backend]) -> Backend:
    if decision.profile.mode is Mode.REPLY:
        return reply_backend(decision.profile.reply_message or DEFAULT_REPLY)
    return backends[decision.tier.backend]
