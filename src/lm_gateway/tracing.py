"""Optional OpenTelemetry export: one span per request, sent to an OTLP/HTTP collector.

Off unless ``[gateway] otlp_endpoint`` is set, and then it needs the ``otel`` extra
(``pip install 'lm-gateway[otel]'``: the standard ``opentelemetry-sdk`` and OTLP/HTTP exporter).

Why spans are built from traffic entries instead of being opened around each request: the entry
already holds everything a span needs (start, duration, tier, backend, tokens, cost, status, the
routing steps), so the request path does no tracing work at all. When tracing is off nothing
subscribes to the traffic log and the cost is exactly zero; when it is on, each finished request
costs one span creation on the event loop, and the SDK's batch processor exports from its own thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lm_gateway import __version__
from lm_gateway.traffic import TrafficEntry, TrafficLog

INSTALL_HINT = "pip install 'lm-gateway[otel]'"


class TracingUnavailable(RuntimeError):
    """``otlp_endpoint`` is set but the OpenTelemetry packages are not installed."""


def span_attributes(entry: TrafficEntry) -> dict[str, Any]:
    """The span's attributes: OpenTelemetry's gen_ai names where they exist, ``lmg.*`` for the rest.
    Never a secret: the client is named by its key's name, errors are already scrubbed."""
    attributes: dict[str, Any] = {
        "http.route": entry.endpoint,
        "http.response.status_code": entry.status,
        "lmg.request_id": entry.id,
        "lmg.client": entry.client,
        "lmg.stream": entry.stream,
        "lmg.escalated": entry.escalated,
    }
    optional = {
        "gen_ai.request.model": entry.requested_model,
        "gen_ai.response.model": entry.model,
        "gen_ai.usage.input_tokens": entry.prompt_tokens,
        "gen_ai.usage.output_tokens": entry.completion_tokens,
        "lmg.profile": entry.profile,
        "lmg.tier": entry.tier,
        "lmg.backend": entry.backend,
        "lmg.mode": entry.mode,
        "lmg.class_label": entry.class_label,
        "lmg.cost_usd": entry.cost_usd,
        "lmg.ttfb_ms": entry.ttfb_ms,
        "lmg.overhead_ms": entry.overhead_ms,
        "lmg.error": entry.error,
    }
    attributes.update({key: value for key, value in optional.items() if value is not None})
    return attributes


def start_tracing(endpoint: str, traffic: TrafficLog, service_name: str = "lm-gateway") -> Callable[[], None]:
    """Export a span for every request recorded from now on; returns the function that stops it
    (flushing what is still queued). Raises :class:`TracingUnavailable` without the ``otel`` extra."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:
        raise TracingUnavailable(
            f"gateway.otlp_endpoint is set but OpenTelemetry is not installed: {INSTALL_HINT}"
        ) from exc

    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("lm_gateway", __version__)

    def export(entry: TrafficEntry) -> None:
        start_ns = int(entry.started * 1e9)
        span = tracer.start_span(
            f"{entry.endpoint} {entry.tier or '-'}",
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes=span_attributes(entry),
        )
        if not entry.success:
            span.set_status(Status(StatusCode.ERROR, entry.error or f"HTTP {entry.status}"))
        for step in entry.route or ():
            span.add_event("route step", {k: str(v) for k, v in step.items()})
        span.end(end_time=start_ns + int(entry.latency_ms * 1e6))

    unsubscribe = traffic.subscribe(export)

    def stop() -> None:
        unsubscribe()
        provider.shutdown()

    return stop
