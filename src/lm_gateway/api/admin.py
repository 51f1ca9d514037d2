"""Admin API (the admin port): the dashboard, health, traffic (and its live feed), stats, metrics,
redacted config, backend probes, reload.

Everything that carries data is behind the admin token when one is configured. The dashboard's own
files (``GET /`` and ``/static/*``) are not: they hold no data, and the page must load before it can
ask the operator for the token, which it then sends as a Bearer header on every call.

Nothing returned here may carry a secret: the config view is the redacted one and backend errors are
scrubbed by the adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway.api.admin_route import route_endpoint
from lm_gateway.api.auth import check_admin
from lm_gateway.api.common import query_params, request_id
from lm_gateway.api.metrics import render_metrics
from lm_gateway.backends import ProbeResult
from lm_gateway.config import redacted_view
from lm_gateway.http.server import Request, Response, StreamResponse, error_response, json_response
from lm_gateway.router import route_text
from lm_gateway.traffic import SLOT_S, Aggregate, RouteKey, TrafficEntry, TrafficLog, merged

if TYPE_CHECKING:
    from lm_gateway.server import Gateway
    from lm_gateway.state import GatewayState

PROBE_TIMEOUT_S = 3.0
MAX_TRAFFIC_LIMIT = 10_000
LADDER_WINDOW_S = 300  # the ladder and backends show the last five minutes
RECENT_WINDOW_S = 60  # the headline tiles show the last minute
STATS_EVERY_S = 2.0  # the live feed pushes fresh stats this often (it doubles as a heartbeat)
STATS_AFTER_TRAFFIC_S = 0.5  # ... and sooner after new traffic
STATS_MAX_AGE_S = 0.5  # stats are computed at most twice a second, however many ask
# Under heavy load a dashboard gets at most FEED_QUEUE rows per FEED_COALESCE_S (the newest; it is
# told how many it missed): more could not be read anyway, and formatting them would cost the gateway.
FEED_COALESCE_S = 0.25
FEED_QUEUE = 100
MAX_FEEDS = 16
DEFAULT_BACKLOG = 100

AdminHandler = Callable[[Request], Awaitable[Response | StreamResponse]]

# The dashboard's files: served without the admin token (they hold no data) under a strict policy
# that allows only these same-origin scripts and styles, so an injected tag could not run anyway.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
}
PAGE_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
]
SSE_HEADERS = [("content-type", "text/event-stream"), ("x-accel-buffering", "no")]


@dataclass(slots=True)
class ProbeSnapshot:
    """A backend's last probe, kept so the dashboard and ``/metrics`` show it without probing again."""

    result: ProbeResult
    at: float

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.result.ok, "at": round(self.at, 3)}
        if self.result.detail:
            data["error"] = self.result.detail
        if self.result.models is not None:
            data["models"] = len(self.result.models)
        return data


class AdminAPI:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._routes: dict[tuple[str, str], AdminHandler] = {
            ("GET", "/admin"): self.index,
            ("GET", "/admin/health"): self.health,
            ("GET", "/admin/traffic"): self.traffic,
            ("GET", "/admin/traffic/stream"): self.traffic_stream,
            ("GET", "/admin/stats"): self.stats,
            ("GET", "/admin/cluster"): self.cluster,
            ("GET", "/admin/config"): self.config,
            ("GET", "/admin/backends/health"): self.backends_health,
            ("POST", "/admin/reload"): self.reload,
            ("POST", "/admin/route"): self.route,
            ("GET", "/metrics"): self.metrics,
        }
        self._paths = {path for _, path in self._routes} | set(STATIC_FILES)
        self._static: dict[str, bytes] = {}
        self._probes: dict[str, ProbeSnapshot] = {}
        self._feeds: set[LiveFeed] = set()
        self._stats_cache: dict[str, tuple[float, bytes]] = {}

    def add_route(self, method: str, path: str, handler: AdminHandler) -> None:
        """One more endpoint, behind the admin token like the others (``--workers``: /admin/workers)."""
        self._routes[(method, path)] = handler
        self._paths.add(path)

    async def handle(self, request: Request) -> Response | StreamResponse:
        rid = request_id(request)
        response = await self._dispatch(request)
        response.headers.append(("x-request-id", rid))
        response.headers.append(("cache-control", "no-store"))
        return response

    async def _dispatch(self, request: Request) -> Response | StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in STATIC_FILES:
            return self._static_file(request.path)
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if request.path in self._paths:
                return error_response(405, f"method {request.method} not allowed", code="method_not_allowed")
            return error_response(404, f"no such admin endpoint: {request.path[:200]}", code="not_found")
        if request.headers.get("sec-fetch-site") == "cross-site":
            # A browser calling on behalf of another site (CSRF, DNS rebinding): never the dashboard.
            return error_response(403, "cross-site admin requests are refused", code="cross_site")
        denied = check_admin(self.gateway.state, request, self.gateway.admin_attempts)
        return denied if denied is not None else await handler(request)

    def _static_file(self, path: str) -> Response:
        name, content_type = STATIC_FILES[path]
        body = self._static.get(name)
        if body is None:
            # Read through importlib.resources: works from a wheel, a zip or a read-only install.
            body = resources.files("lm_gateway.api").joinpath("static", name).read_bytes()
            self._static[name] = body
        return Response(200, body, [("content-type", content_type), *PAGE_HEADERS])

    # -- endpoints ---------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        endpoints = [f"{method} {path}" for method, path in self._routes]
        return json_response(200, {"service": "lm-gateway admin", "dashboard": "/", "endpoints": endpoints})

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
        limit = _limit_param(request, "limit", 100)
        if isinstance(limit, Response):
            return limit
        scope = _scope_param(request, self.gateway)
        if isinstance(scope, Response):
            return scope
        log = self.gateway.traffic_view(scope)
        stats = log.stats()
        stats["cost"] = self.gateway.costs_view(scope).view()
        entries = [entry_json(entry) for entry in log.recent(limit)]
        return json_response(200, {"scope": scope, "stats": stats, "entries": entries})

    async def cluster(self, request: Request) -> Response:
        """Whether this instance shares its state through Redis, and how that is going."""
        cluster = self.gateway.cluster
        return json_response(200, cluster.view() if cluster is not None else {"enabled": False})

    async def route(self, request: Request) -> Response:
        """The routing decision for a request body, without calling the answering tier."""
        return await route_endpoint(self.gateway, request)

    async def traffic_stream(self, request: Request) -> Response | StreamResponse:
        """The dashboard's live feed (Server-Sent Events): a snapshot, then new entries as they are
        recorded, and fresh stats every :data:`STATS_EVERY_S` (which also keep the connection alive)."""
        backlog = _limit_param(request, "backlog", DEFAULT_BACKLOG)
        if isinstance(backlog, Response):
            return backlog
        scope = _scope_param(request, self.gateway)
        if isinstance(scope, Response):
            return scope
        if len(self._feeds) >= MAX_FEEDS:
            return error_response(
                503, f"too many live feeds open (at most {MAX_FEEDS})", type_="server_error", code="busy"
            )
        feed = LiveFeed(self.gateway.traffic_view(scope), lambda: self._stats_bytes(scope))
        self._feeds.add(feed)
        chunks = feed.events(backlog)
        return StreamResponse(200, chunks, list(SSE_HEADERS), on_close=lambda _: self._feeds.discard(feed))

    def end_feeds(self) -> None:
        """End every live feed (the gateway is stopping): an open dashboard must not hold up the drain."""
        for feed in list(self._feeds):
            feed.close()

    async def stats(self, request: Request) -> Response:
        scope = _scope_param(request, self.gateway)
        if isinstance(scope, Response):
            return scope
        return Response(200, self._stats_bytes(scope), [("content-type", "application/json")])

    def _stats_bytes(self, scope: str) -> bytes:
        now = time.monotonic()
        cached = self._stats_cache.get(scope)
        if cached is None or now - cached[0] > STATS_MAX_AGE_S:
            payload = dashboard_stats(self.gateway, self._probes, scope)
            cached = self._stats_cache[scope] = (now, orjson.dumps(payload))
        return cached[1]

    async def metrics(self, request: Request) -> Response:
        probes = {name: snap.result.ok for name, snap in self._probes.items()}
        return render_metrics(self.gateway, probes)

    async def config(self, request: Request) -> Response:
        state = self.gateway.state
        view = redacted_view(state.config)
        view["source"] = state.config.source
        view["warnings"] = [*state.config.warnings, *state.table.warnings]
        return json_response(200, view)

    async def backends_health(self, request: Request) -> Response:
        """Probe every backend at once (or only ``?backend=NAME``), each bounded by a short timeout;
        no probe costs tokens. Each item also carries the router's circuit and gate state. 200 when
        all probed backends are up, else 207."""
        state = self.gateway.state
        only = query_params(request.query).get("backend")
        if only is not None and only not in state.backends:
            return error_response(404, f"unknown backend '{only[:200]}'", code="unknown_backend")
        names = [only] if only is not None else list(state.backends)
        results = await asyncio.gather(*(state.backends[n].probe(PROBE_TIMEOUT_S) for n in names))
        now = time.time()
        runtime = self.gateway.backend_runtime()  # the sum of all workers' with --workers
        items: list[dict[str, Any]] = []
        for name, result in zip(names, results, strict=True):
            self._probes[name] = ProbeSnapshot(result, now)
            items.append({**_probe_item(state, name, result), **runtime[name]})
        self._stats_cache.clear()
        status = 200 if all(r.ok for r in results) else 207
        return json_response(status, {"backends": items})

    async def reload(self, request: Request) -> Response:
        token_before = self.gateway.state.admin_token
        problems = await self.gateway.reload()
        self._stats_cache.clear()
        if self.gateway.state.admin_token != token_before:
            self.end_feeds()  # open dashboards must show the new token (or its absence) again
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
        self._probes = {n: p for n, p in self._probes.items() if n in config.backends}
        return json_response(
            200, {"status": "reloaded", "source": config.source, "warnings": list(config.warnings)}
        )


def entry_json(entry: TrafficEntry) -> dict[str, Any]:
    """A traffic entry as the admin API shows it: its fields plus ``route_text``, the unbounded
    content of its ``X-LMG-Route`` header (None when it was refused before routing)."""
    data = entry.to_json()
    data["route_text"] = route_text(entry)
    return data


def _limit_param(request: Request, name: str, default: int) -> int | Response:
    raw = query_params(request.query).get(name, str(default))
    if not raw.isdigit():
        return error_response(
            400, f"'{name}' must be a non-negative integer, got '{raw[:40]}'", code=f"invalid_{name}"
        )
    return min(int(raw), MAX_TRAFFIC_LIMIT)


def _scope_param(request: Request, gateway: Gateway) -> str | Response:
    """``scope``: ``cluster`` (every instance's traffic, the default when Redis is configured) or
    ``instance`` (this one's own; the only one without Redis)."""
    default = "cluster" if gateway.cluster is not None else "instance"
    scope = query_params(request.query).get("scope", default)
    if scope not in ("cluster", "instance"):
        return error_response(
            400, f"'scope' must be cluster or instance, got '{scope[:40]}'", code="invalid_scope"
        )
    if scope == "cluster" and gateway.cluster is None:
        return error_response(
            400, "scope=cluster needs gateway.redis_url (this instance shares no state)", code="no_cluster"
        )
    return scope


def _probe_item(state: GatewayState, name: str, result: ProbeResult) -> dict[str, Any]:
    item: dict[str, Any] = {
        "backend": name,
        "provider": str(state.config.backends[name].provider),
        "status": "ok" if result.ok else "unreachable",
    }
    if result.detail:
        item["error"] = result.detail
    if result.models is not None:
        item["models"] = result.models[:200]
    return item


# -- the live feed ---------------------------------------------------------------------------------


class LiveFeed:
    """One open dashboard's subscription to the traffic log.

    The traffic log calls :meth:`push` on the request's hot path, so it only queues the entry (in a
    bounded queue: a dashboard that cannot keep up loses the oldest rows and is told how many);
    formatting and sending happen in :meth:`events`, on the feed's own time.
    """

    def __init__(self, traffic: TrafficLog, stats: Callable[[], bytes]) -> None:
        self._traffic = traffic
        self._stats = stats
        self._queue: deque[TrafficEntry] = deque(maxlen=FEED_QUEUE)
        self._dropped = 0
        self._wake = asyncio.Event()
        self._closed = False

    def push(self, entry: TrafficEntry) -> None:
        if len(self._queue) == FEED_QUEUE:
            self._dropped += 1
        self._queue.append(entry)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def events(self, backlog: int) -> AsyncIterator[bytes]:
        # Subscribe and take the snapshot with no await in between, so no entry is missed or doubled.
        unsubscribe = self._traffic.subscribe(self.push)
        try:
            snapshot = [entry_json(entry) for entry in self._traffic.recent(backlog)]
            yield _event("snapshot", {"entries": snapshot}) + _stats_event(self._stats())
            loop = asyncio.get_running_loop()
            next_stats = loop.time() + STATS_EVERY_S
            while not self._closed:
                await self._wait_until(next_stats)
                if self._closed:
                    break
                chunk = self._take_entries()
                if chunk:  # new traffic: the figures follow within half a second
                    next_stats = min(next_stats, loop.time() + STATS_AFTER_TRAFFIC_S)
                if loop.time() >= next_stats:
                    chunk += _stats_event(self._stats())
                    next_stats = loop.time() + STATS_EVERY_S
                if chunk:
                    yield chunk
                    await asyncio.sleep(FEED_COALESCE_S)
        finally:
            unsubscribe()

    async def _wait_until(self, deadline: float) -> None:
        """Until an entry is queued, the feed is closed, or ``deadline`` (loop time) has passed."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
        self._wake.clear()

    def _take_entries(self) -> bytes:
        if not self._queue:
            return b""
        entries = [entry_json(entry) for entry in self._queue]
        self._queue.clear()
        payload: dict[str, Any] = {"entries": entries}
        if self._dropped:
            payload["dropped"], self._dropped = self._dropped, 0
        return _event("entries", payload)


def _event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload, default=str) + b"\n\n"


def _stats_event(stats_json: bytes) -> bytes:
    return b"event: stats\ndata: " + stats_json + b"\n\n"


# -- the dashboard's stats -------------------------------------------------------------------------


def dashboard_stats(
    gateway: Gateway, probes: dict[str, ProbeSnapshot], scope: str = "instance"
) -> dict[str, Any]:
    """Everything the dashboard shows besides the traffic rows: headline figures, the tier ladder
    with each tier's recent traffic, backend health, and the 15-minute series for the charts.
    ``scope``: whose traffic (see :func:`_scope_param`); the gauges are always this instance's."""
    traffic = gateway.traffic_view(scope)
    state = gateway.state
    now = time.time()
    routes, covered = traffic.window(LADDER_WINDOW_S, now)
    recent, recent_covered = traffic.window(RECENT_WINDOW_S, now)
    lifetime = merged(traffic.routes.values())
    return {
        "now": round(now, 3),
        "uptime_secs": int(gateway.uptime()),
        "ready": not state.config.missing_secrets,
        "window_secs": LADDER_WINDOW_S,
        "recent_secs": RECENT_WINDOW_S,
        "slot_secs": SLOT_S,
        "totals": {
            **traffic.public_stats(),
            "in_flight": gateway.traffic.in_flight,
            "open_streams": gateway.traffic.open_streams,
            "prompt_tokens": lifetime.prompt_tokens,
            "completion_tokens": lifetime.completion_tokens,
            "cost_usd": round(lifetime.cost_usd, 6),
        },
        "recent": merged(recent.values()).summary(recent_covered),
        "ladder": _ladder(state, routes, covered),
        "other_routes": _other_routes(state, routes, covered),
        "profiles": [
            {
                "name": p.name,
                "mode": str(p.mode),
                "classifier": p.classifier,
                "max_auto_tier": p.max_auto_tier,
            }
            for p in state.config.profiles.values()
        ],
        "backends": _backends(state, routes, covered, probes, gateway.backend_runtime()),
        "series": traffic.series(now),
        "scope": scope,
        "cluster": gateway.cluster.view() if gateway.cluster is not None else None,
    }


def _ladder(state: GatewayState, routes: dict[RouteKey, Aggregate], covered: float) -> list[dict[str, Any]]:
    config = state.config
    ladder = []
    for index, tier in enumerate(config.tiers):
        aggregate = merged(a for (name, _), a in routes.items() if name == tier.name)
        roles = [
            {"profile": p.name, "role": role}
            for p in config.profiles.values()
            for role, target in (("classifier", p.classifier), ("ceiling", p.max_auto_tier))
            if target == tier.name
        ]
        ladder.append(
            {
                "index": index,
                "tier": tier.name,
                "backend": tier.backend,
                "model": tier.model,
                "input_cost_per_mtok": tier.input_cost_per_mtok,
                "output_cost_per_mtok": tier.output_cost_per_mtok,
                "aliases": [alias for alias, target in config.aliases.items() if target == tier.name],
                "profiles": roles,
                **aggregate.summary(covered),
            }
        )
    return ladder


def _other_routes(
    state: GatewayState, routes: dict[RouteKey, Aggregate], covered: float
) -> list[dict[str, Any]]:
    """Recent traffic not on the ladder: refused before routing (tier ""), reply-mode profiles, and
    tiers removed by a reload."""
    on_ladder = {tier.name for tier in state.config.tiers}
    return [
        {"tier": tier, "backend": backend, **aggregate.summary(covered)}
        for (tier, backend), aggregate in sorted(routes.items())
        if tier not in on_ladder
    ]


def _backends(
    state: GatewayState,
    routes: dict[RouteKey, Aggregate],
    covered: float,
    probes: dict[str, ProbeSnapshot],
    runtime: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    items = []
    for name in state.backends:
        aggregate = merged(a for (_, owner), a in routes.items() if owner == name)
        probe = probes.get(name)
        items.append(
            {
                "backend": name,
                "provider": str(state.config.backends[name].provider),
                "circuit": runtime[name]["circuit"],
                "gate": runtime[name]["gate"],
                "probe": probe.to_json() if probe is not None else None,
                **aggregate.summary(covered),
            }
        )
    return items
