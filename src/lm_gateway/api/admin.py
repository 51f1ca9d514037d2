"""Admin API (the admin port): health, traffic, redacted config, backend probes, reload.

Everything here is behind the admin token when one is configured. Nothing returned here may carry a
secret: the config view is the redacted one and backend errors are scrubbed by the adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lm_gateway.api.auth import check_admin
from lm_gateway.api.common import query_params, request_id
from lm_gateway.config import redacted_view
from lm_gateway.http.server import Request, Response, error_response, json_response

if TYPE_CHECKING:
    from lm_gateway.server import Gateway

PROBE_TIMEOUT_S = 3.0
MAX_TRAFFIC_LIMIT = 10_000


class AdminAPI:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("GET", "/"): self.index,
            ("GET", "/admin/health"): self.health,
            ("GET", "/admin/traffic"): self.traffic,
            ("GET", "/admin/config"): self.config,
            ("GET", "/admin/backends/health"): self.backends_health,
            ("POST", "/admin/reload"): self.reload,
        }

    async def handle(self, request: Request) -> Response:
        rid = request_id(request)
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            known = any(p == request.path for _, p in self._routes)
            response = (
                error_response(405, f"method {request.method} not allowed", code="method_not_allowed")
                if known
                else error_response(404, f"no such admin endpoint: {request.path[:200]}", code="not_found")
            )
        else:
            denied = check_admin(self.gateway.state, request)
            response = denied if denied is not None else await handler(request)
        response.headers.append(("x-request-id", rid))
        response.headers.append(("cache-control", "no-store"))
        return response

    async def index(self, request: Request) -> Response:
        endpoints = [f"{method} {path}" for method, path in self._routes]
        return json_response(200, {"service": "lm-gateway admin", "endpoints": endpoints})

    async def health(self, request: Request) -> Response:
        state = self.gateway.state
        config = state.config
        payload = {
            "status": "ok",
            "ready": not config.missing_secrets,
            "tiers": len(config.tiers),
            "backends": len(config.backends),
            "config_source": config.source,
            "missing_secrets": list(config.missing_secrets),
            "uptime_secs": int(self.gateway.uptime()),
        }
        return json_response(200, payload)

    async def traffic(self, request: Request) -> Response:
        raw = query_params(request.query).get("limit", "100")
        if not raw.isdigit():
            return error_response(
                400, f"'limit' must be a non-negative integer, got '{raw[:40]}'", code="invalid_limit"
            )
        limit = min(int(raw), MAX_TRAFFIC_LIMIT)
        log = self.gateway.traffic
        payload = {"stats": log.stats(), "entries": [entry.to_json() for entry in log.recent(limit)]}
        return json_response(200, payload)

    async def config(self, request: Request) -> Response:
        state = self.gateway.state
        view = redacted_view(state.config)
        view["source"] = state.config.source
        view["warnings"] = [*state.config.warnings, *state.table.warnings]
        return json_response(200, view)

    async def backends_health(self, request: Request) -> Response:
        """Probe every backend at once, each bounded by a short timeout (none costs tokens)."""
        state = self.gateway.state
        names = list(state.backends)
        results = await asyncio.gather(*(state.backends[n].probe(PROBE_TIMEOUT_S) for n in names))
        items: list[dict[str, Any]] = []
        for name, result in zip(names, results, strict=True):
            item: dict[str, Any] = {
                "backend": name,
                "provider": str(state.config.backends[name].provider),
                "status": "ok" if result.ok else "unreachable",
            }
            if result.detail:
                item["error"] = result.detail
            if result.models is not None:
                item["models"] = result.models[:200]
            items.append(item)
        status = 200 if all(r.ok for r in results) else 207
        return json_response(status, {"backends": items})

    async def reload(self, request: Request) -> Response:
        problems = await self.gateway.reload()
        if problems:
            payload = {
                "error": {
                    "message": "config reload refused; the running config is unchanged",
                    "type": "invalid_config",
                    "code": "reload_failed",
                    "problems": problems,
                }
            }
            return json_response(422, payload)
        config = self.gateway.state.config
        return json_response(
            200, {"status": "reloaded", "source": config.source, "warnings": list(config.warnings)}
        )
