"""Routing: which profile, which tier, which backend; the modes build on dispatch."""

from lm_gateway.router.dispatch import RouteDecision, RoutingError, inject_system_prompt, route
from lm_gateway.router.engine import Served, serve
from lm_gateway.router.table import RoutingTable, build_table

__all__ = [
    "RouteDecision",
    "RoutingError",
    "RoutingTable",
    "Served",
    "build_table",
    "inject_system_prompt",
    "route",
    "serve",
]
