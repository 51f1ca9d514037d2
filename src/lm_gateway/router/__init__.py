"""Routing: which profile, which tier, which backend; the modes build on dispatch."""

from lm_gateway.router.cost import CostLedger
from lm_gateway.router.dispatch import RouteDecision, RoutingError, inject_system_prompt, route
from lm_gateway.router.engine import Served, explain, serve
from lm_gateway.router.explain import route_header, route_text
from lm_gateway.router.table import RoutingTable, build_table
from lm_gateway.router.upstream import Caller, backend_status, default_call

__all__ = [
    "Caller",
    "CostLedger",
    "RouteDecision",
    "RoutingError",
    "RoutingTable",
    "Served",
    "backend_status",
    "build_table",
    "default_call",
    "explain",
    "inject_system_prompt",
    "route",
    "route_header",
    "route_text",
    "serve",
]
