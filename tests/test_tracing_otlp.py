"""Optional OpenTelemetry export: with ``otlp_endpoint`` set, every request reaches a real OTLP/HTTP
collector as a span with the routing facts; without it, nothing subscribes to the traffic log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Usage
from .fakes.threaded import ServerThread
from .gateway import openai_backend_config


class Collector:
    """A minimal OTLP/HTTP trace receiver: decodes the protobuf export requests it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        with self._lock:
            for resource_spans in export.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    with ServerThread(receiver, name="otlp-collector"):
        yield receiver


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, kind)
    return values


def test_every_request_becomes_a_span_with_its_routing_facts(
    start_gateway: StartGateway, collector: Collector
) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(
            openai_backend_config(fake.url),
            gateway_extra=f'otlp_endpoint = "http://127.0.0.1:{collector.port}"\n',
        )
        fake.script(Reply(text="traced", usage=Usage(input_tokens=5, output_tokens=2)))
        ok = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]},
        )
        missing = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "nope", "messages": [{"role": "user", "content": "q"}]},
        )
        assert (ok.status_code, missing.status_code) == (200, 404)
        gw.stop()  # flushes the batch processor
    spans = {attributes(span)["lmg.request_id"]: span for span in collector.spans}
    good = spans[ok.headers["x-request-id"]]
    facts = attributes(good)
    assert facts["lmg.tier"] == "local:fast" and facts["lmg.backend"] == "mock"
    assert facts["gen_ai.request.model"] == "hint:fast" and facts["gen_ai.response.model"] == "fast-model"
    assert (facts["gen_ai.usage.input_tokens"], facts["gen_ai.usage.output_tokens"]) == (5, 2)
    assert facts["http.response.status_code"] == 200
    assert good.end_time_unix_nano > good.start_time_unix_nano
    bad = spans[missing.headers["x-request-id"]]
    assert attributes(bad)["http.response.status_code"] == 404
    assert bad.status.code == 2  # STATUS_CODE_ERROR


def test_tracing_off_subscribes_nothing(start_gateway: StartGateway) -> None:
    with OpenAIBackend() as fake:
        gw = start_gateway(openai_backend_config(fake.url))
        assert gw.gateway.tracing_enabled is False
