"""The client port: endpoint table, authentication, and the chat flow every protocol shares.

Each client protocol (``api/openai.py``, and the Anthropic and Ollama ones) parses its own request
into the internal OpenAI shape and encodes the result back; everything in between — who is calling,
routing, calling the backend, timing, the traffic entry — is :meth:`ClientAPI.run_chat`, written once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lm_gateway.api.auth import Identity, authenticate_client
from lm_gateway.api.common import error_message, request_id
from lm_gateway.backends import Backend, BackendError, ChatStream, Completion
from lm_gateway.http.server import Request, Response, StreamResponse, error_response
from lm_gateway.router import Caller, RouteDecision, RoutingError, Served, default_call, serve
from lm_gateway.router.explain import route_header
from lm_gateway.traffic import TrafficEntry

if TYPE_CHECKING:
    from lm_gateway.server import Gateway

perf = time.perf_counter
HEALTHZ = b'{"status":"ok"}'
Endpoint = Callable[[Request, str], Awaitable[Response | StreamResponse]]


class ChatFailed(Exception):
    """A chat request that ended in an error; carries what the protocol needs to shape its answer."""

    def __init__(
        self, status: int, message: str, code: str, type_: str, retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.retry_after = retry_after


class ClientAPI:
    def __init__(self, gateway: Gateway) -> None:
        from lm_gateway.api.anthropic import AnthropicEndpoints
        from lm_gateway.api.ollama import OllamaEndpoints
        from lm_gateway.api.openai import OpenAIEndpoints
        from lm_gateway.api.status import StatusEndpoint

        self.gateway = gateway
        self.routes: dict[tuple[str, str], Endpoint] = {}
        OpenAIEndpoints(self).register(self.routes)
        AnthropicEndpoints(self).register(self.routes)
        OllamaEndpoints(self).register(self.routes)
        StatusEndpoint(self).register(self.routes)
        self._paths = {path for _, path in self.routes}

    async def handle(self, request: Request) -> Response | StreamResponse:
        path = request.path
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            # Never behind auth or limits: container health checks must work whatever the keys.
            return Response(200, HEALTHZ, [("content-type", "application/json")])
        rid = request_id(request)
        handler = self.routes.get((request.method, path))
        if handler is not None:
            return await handler(request, rid)
        if path in self._paths:
            response = error_response(
                405, f"method {request.method} not allowed on {path}", code="method_not_allowed"
            )
        else:
            response = error_response(
                404, f"no such endpoint: {request.method} {path[:200]}", code="not_found"
            )
        response.headers.append(("x-request-id", rid))
        return response

    # -- the shared chat flow ----------------------------------------------------------------------

    def identify(self, request: Request) -> Identity | Response:
        return authenticate_client(self.gateway.state, request)

    def new_entry(
        self, rid: str, request: Request, who: Identity | None, model: Any, stream: bool
    ) -> TrafficEntry:
        profile = self.gateway.state.table.profile(who.profile).name if who is not None else None
        return TrafficEntry(
            id=rid,
            started=time.time(),
            client=who.name if who is not None else request.peer,
            profile=profile,
            requested_model=model[:200] if isinstance(model, str) else None,
            endpoint=request.path,
            stream=stream,
        )

    async def run_chat(
        self,
        request: Request,
        who: Identity,
        body: dict[str, Any],
        entry: TrafficEntry,
        started: float,
        call: Caller = default_call,
    ) -> Served:
        """Route and call the backend for an internal (OpenAI-shaped) request; :class:`ChatFailed` on error.

        A non-streamed answer is recorded here; a stream is recorded by :meth:`watch_stream` when it ends.
        """
        state = self.gateway.state
        headers = request.headers
        expert = headers.get("x-lmg-expert", "").strip().lower() == "true"
        try:
            served = await serve(
                state.table,
                state.backends,
                body,
                bound_profile=who.profile,
                expert=expert,
                stream=entry.stream,
                trace=entry,
                priority=_priority(headers.get("x-lmg-priority")),
                client=who.name if who.keyed else None,
                call=call,
            )
        except RoutingError as err:
            raise self.fail(entry, started, ChatFailed(err.status, err.message, err.code, err.type)) from err
        except BackendError as err:
            failure = ChatFailed(err.status, err.message, err.code, err.type, err.retry_after)
            raise self.fail(entry, started, failure) from err
        entry.overhead_ms = (perf() - started - served.upstream_s) * 1000
        if served.completion is not None:
            entry.status = 200
            entry.latency_ms = (perf() - started) * 1000
            entry.prompt_tokens = served.completion.prompt_tokens
            entry.completion_tokens = served.completion.completion_tokens
            self.gateway.traffic.record(entry)
        return served

    def fail(self, entry: TrafficEntry, started: float, failure: ChatFailed) -> ChatFailed:
        """Record a failed request and hand the failure back for the protocol to shape."""
        entry.status, entry.error = failure.status, failure.message
        entry.latency_ms = (perf() - started) * 1000
        self.gateway.traffic.record(entry)
        return failure

    def record_refusal(
        self, request: Request, rid: str, response: Response, started: float, who: Identity | None = None
    ) -> Response:
        """Record a request refused before routing (auth, malformed body) and return its response."""
        response.headers.append(("x-request-id", rid))
        entry = self.new_entry(rid, request, who, None, False)
        entry.status = response.status
        entry.error = error_message(response.body)
        entry.latency_ms = (perf() - started) * 1000
        self.gateway.traffic.record(entry)
        return response

    def watch_stream(
        self,
        entry: TrafficEntry,
        stream: ChatStream,
        chunks: AsyncIterator[bytes],
        started: float,
    ) -> tuple[AsyncIterator[bytes], Callable[[bool], None]]:
        """Time the first chunk of ``chunks`` (the client-format bytes of ``stream``) and record the
        traffic entry when the response ends, however it ends."""
        timing = _StreamTiming(started)

        def finished(completed: bool) -> None:
            entry.latency_ms = (perf() - started) * 1000
            entry.ttfb_ms = timing.first_chunk_ms
            entry.prompt_tokens = stream.prompt_tokens
            entry.completion_tokens = stream.completion_tokens
            entry.status = 200 if completed else 499
            entry.error = stream.error or (
                None if completed else "client disconnected before the stream ended"
            )
            self.gateway.traffic.record(entry)

        return timing.watch(chunks), finished


class NativeCall:
    """A :data:`Caller` that forwards the client's own request untouched when the chosen backend speaks
    the client's protocol (or always, for endpoints that only exist natively, e.g. embeddings), and
    otherwise lets the router call the backend with the internal request. ``used`` tells the endpoint
    which format the answer is in."""

    __slots__ = ("always", "body", "path", "prepare", "protocol", "used")

    def __init__(
        self,
        protocol: str,
        path: str,
        body: dict[str, Any],
        prepare: Callable[[dict[str, Any], RouteDecision], None],
        *,
        always: bool = False,
    ) -> None:
        self.protocol = protocol
        self.path = path
        self.body = body
        self.prepare = prepare
        self.always = always
        self.used = False

    async def __call__(
        self, backend: Backend, decision: RouteDecision, internal: dict[str, Any], stream: bool
    ) -> Completion | ChatStream:
        if not self.always and backend.protocol != self.protocol:
            return await default_call(backend, decision, internal, stream)
        self.used = True
        self.prepare(self.body, decision)
        return await backend.forward(self.path, self.body, stream)


def routing_headers(rid: str, entry: TrafficEntry) -> list[tuple[str, str]]:
    headers = [("x-request-id", rid)]
    if entry.tier is not None:
        headers.append(("x-lmg-tier", header_safe(entry.tier)))
    if entry.model is not None:
        headers.append(("x-lmg-model", header_safe(entry.model)))
    if entry.profile is not None:
        headers.append(("x-lmg-profile", header_safe(entry.profile)))
    if entry.overhead_ms is not None:
        headers.append(("x-lmg-overhead-ms", f"{entry.overhead_ms:.3f}"))
    route = route_header(entry)
    if route is not None:
        headers.append(("x-lmg-route", header_safe(route)))
    return headers


def _priority(raw: str | None) -> int:
    """``X-LMG-Priority``: a signed integer, higher is more urgent; absent or invalid is 0."""
    if raw is None:
        return 0
    try:
        return max(-1_000_000, min(1_000_000, int(raw.strip())))
    except ValueError:
        return 0


def header_safe(value: str) -> str:
    """Names from the config or an upstream can hold anything; a header value must not (no CR/LF
    smuggling, no non-ASCII): every other character becomes ``?``."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else "?" for c in value)


class _StreamTiming:
    """Notes when the first chunk of a stream went out."""

    __slots__ = ("first_chunk_ms", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_chunk_ms: float | None = None

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                return
            self.first_chunk_ms = (perf() - self.started) * 1000
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            # Closing this wrapper early (client gone) must close the upstream relay too.
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()
