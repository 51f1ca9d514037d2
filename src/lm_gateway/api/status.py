"""``GET /status`` on the client port: public liveness and counters.

Public on purpose (no client key needed, like ``/healthz``), so it says nothing about the setup: no
tier, backend, model, profile or client names, and no secret names, only whether the gateway is
ready (every configured secret present) and how much traffic it has served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm_gateway.http.server import Request, Response, json_response

if TYPE_CHECKING:
    from lm_gateway.api.client import ClientAPI, Endpoint

NOT_READY_HINT = "some configured secrets are missing; the admin API's /admin/health names them"


class StatusEndpoint:
    def __init__(self, api: ClientAPI) -> None:
        self.api = api

    def register(self, routes: dict[tuple[str, str], Endpoint]) -> None:
        routes[("GET", "/status")] = self.status
        routes[("HEAD", "/status")] = self.status

    async def status(self, request: Request, rid: str) -> Response:
        gateway = self.api.gateway
        ready = not gateway.state.config.missing_secrets
        payload: dict[str, object] = {
            "status": "ok",
            "ready": ready,
            "uptime_secs": int(gateway.uptime()),
            "requests": gateway.traffic.public_stats(),
        }
        if not ready:
            payload["setup"] = NOT_READY_HINT
        return json_response(200, payload, [("x-request-id", rid), ("cache-control", "no-store")])
