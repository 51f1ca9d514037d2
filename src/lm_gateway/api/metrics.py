"""``GET /metrics`` (admin port): the traffic log's counters in the Prometheus text format.

Why a collector instead of prometheus-client's own metric objects: those take a lock and a label
lookup on every increment, on the request's hot path. Here the hot path only bumps plain integers in
:class:`~lm_gateway.traffic.TrafficLog`, and this module turns them into metric families when a
scraper asks, so metrics cost nothing between scrapes. prometheus-client still does the exposition
(label escaping, number formatting, the exact text format), and it is imported on the first scrape
only, so it adds nothing to start-up time or idle memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lm_gateway import __version__
from lm_gateway.http.server import Request, Response, StreamResponse
from lm_gateway.router import backend_status
from lm_gateway.traffic import LATENCY_BOUNDS_MS, Aggregate, Histogram, TrafficLog

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from lm_gateway.server import Gateway
    from lm_gateway.state import GatewayState

Handler = Callable[[Request], Awaitable[Response | StreamResponse]]
ROUTE_LABELS = ["tier", "backend"]
CIRCUIT_STATES = ("closed", "half-open", "open")
# The classic text format, which every scraper reads; all our metric names are valid in it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BOUNDS_S = [f"{bound / 1000:g}" for bound in LATENCY_BOUNDS_MS]


def render_metrics(gateway: Gateway, probes: Mapping[str, bool]) -> Response:
    """The exposition of every gateway metric; ``probes`` is each probed backend's last result."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(gateway, probes))
    return Response(200, generate_latest(registry), [("content-type", CONTENT_TYPE)])


def backend_runtime(state: GatewayState) -> dict[str, dict[str, Any]]:
    """Each backend's circuit breaker (``state``: closed, open or half-open, with its window) and
    concurrency gate (in flight, queued), each None when not in use, as the router keeps them."""
    return backend_status(state.table, state.backends)


def track_in_flight(handler: Handler, traffic: TrafficLog) -> Handler:
    """Wrap the client port's handler to keep the in-flight request and open-stream gauges.

    A streamed response is in flight until it has been sent, so its count is released by the
    response's ``on_close`` (which the server runs however the stream ends), not when the handler
    returns.
    """

    async def handle(request: Request) -> Response | StreamResponse:
        traffic.in_flight += 1
        streaming = False
        try:
            response = await handler(request)
            if isinstance(response, StreamResponse):
                streaming = True
                _release_on_close(response, traffic)
            return response
        finally:
            if not streaming:
                traffic.in_flight -= 1

    return handle


def _release_on_close(response: StreamResponse, traffic: TrafficLog) -> None:
    traffic.open_streams += 1
    inner = response.on_close

    def closed(completed: bool) -> None:
        traffic.open_streams -= 1
        traffic.in_flight -= 1
        if inner is not None:
            inner(completed)

    response.on_close = closed


class _Collector:
    """Builds the metric families from the traffic log and the running state at scrape time."""

    def __init__(self, gateway: Gateway, probes: Mapping[str, bool]) -> None:
        self.gateway = gateway
        self.probes = probes

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        traffic = self.gateway.traffic
        yield from _request_families(traffic)
        yield from _route_families(traffic.routes)
        yield from _backend_families(self.gateway, self.probes)
        info = GaugeMetricFamily("lmg_build_info", "The gateway's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("lmg_in_flight_requests", "Client requests being served.", traffic.in_flight)
        yield GaugeMetricFamily(
            "lmg_in_flight_streams", "Streamed responses being sent to clients.", traffic.open_streams
        )
        yield GaugeMetricFamily(
            "lmg_uptime_seconds", "Seconds since the gateway started.", self.gateway.uptime()
        )
        cluster = self.gateway.cluster
        if cluster is not None:
            yield GaugeMetricFamily(
                "lmg_redis_up",
                "1 while the Redis holding the cluster's shared state answers, 0 while this instance "
                "falls back to its own state.",
                1 if cluster.link.up else 0,
            )


def _request_families(traffic: TrafficLog) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily

    requests = CounterMetricFamily(
        "lmg_requests",
        "Client requests by serving tier and backend (empty when refused before routing), "
        "profile and HTTP status; failures included.",
        labels=["tier", "backend", "profile", "status"],
    )
    for (tier, backend, profile, status), count in sorted(traffic.requests.items()):
        requests.add_metric([tier, backend, profile, str(status)], count)
    yield requests
    escalations = CounterMetricFamily(
        "lmg_escalations", "Requests that stepped up the tier ladder.", labels=["profile"]
    )
    for profile, count in sorted(traffic.escalations.items()):
        escalations.add_metric([profile], count)
    yield escalations
    classifier = CounterMetricFamily(
        "lmg_classifier_calls",
        "Upstream calls to a profile's classifier, by whether they gave a label (ok) or not (error).",
        labels=["profile", "outcome"],
    )
    for (profile, outcome), count in sorted(traffic.classifier_calls.items()):
        classifier.add_metric([profile, outcome], count)
    yield classifier


def _route_families(routes: Mapping[tuple[str, str], Aggregate]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    errors = CounterMetricFamily(
        "lmg_request_errors",
        "Failed requests (an error status, or a stream that ended with an error).",
        labels=ROUTE_LABELS,
    )
    latency = HistogramMetricFamily(
        "lmg_request_duration_seconds", "Time from request to the end of the response.", labels=ROUTE_LABELS
    )
    ttft = HistogramMetricFamily(
        "lmg_time_to_first_token_seconds", "Time to the first streamed chunk.", labels=ROUTE_LABELS
    )
    tokens = CounterMetricFamily("lmg_tokens", "Tokens reported by backends.", labels=[*ROUTE_LABELS, "kind"])
    cost = CounterMetricFamily("lmg_cost_usd", "Cost of upstream calls in US dollars.", labels=ROUTE_LABELS)
    for route, aggregate in sorted(routes.items()):
        labels = list(route)
        errors.add_metric(labels, aggregate.errors)
        latency.add_metric(labels, _buckets(aggregate.latency), aggregate.latency.sum / 1000)
        if aggregate.ttft is not None:
            ttft.add_metric(labels, _buckets(aggregate.ttft), aggregate.ttft.sum / 1000)
        tokens.add_metric([*labels, "prompt"], aggregate.prompt_tokens)
        tokens.add_metric([*labels, "completion"], aggregate.completion_tokens)
        cost.add_metric(labels, aggregate.cost_usd)
    yield from (errors, latency, ttft, tokens, cost)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs in seconds, ending with ``+Inf``."""
    pairs: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip([*_BOUNDS_S, "+Inf"], histogram.counts, strict=True):
        seen += count
        pairs.append((bound, seen))
    return pairs


def _backend_families(gateway: Gateway, probes: Mapping[str, bool]) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    circuit = GaugeMetricFamily(
        "lmg_backend_circuit_state",
        "1 for the state each backend's circuit breaker is in, 0 for the others.",
        labels=["backend", "state"],
    )
    in_flight = GaugeMetricFamily(
        "lmg_backend_gate_in_flight",
        "Calls holding a slot of the backend's concurrency gate.",
        labels=["backend"],
    )
    queued = GaugeMetricFamily(
        "lmg_backend_gate_queued", "Calls waiting for the backend's concurrency gate.", labels=["backend"]
    )
    for name, runtime in sorted(gateway.backend_runtime().items()):
        if runtime["circuit"] is not None:
            for state in CIRCUIT_STATES:
                circuit.add_metric([name, state], 1 if runtime["circuit"]["state"] == state else 0)
        if runtime["gate"] is not None:
            in_flight.add_metric([name], runtime["gate"]["in_flight"])
            queued.add_metric([name], runtime["gate"]["queued"])
    up = GaugeMetricFamily(
        "lmg_backend_probe_up", "1 when the backend's last health probe succeeded.", labels=["backend"]
    )
    for name, ok in sorted(probes.items()):
        up.add_metric([name], 1 if ok else 0)
    yield from (circuit, in_flight, queued, up)
