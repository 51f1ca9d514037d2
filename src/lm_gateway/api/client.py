"""The client port: endpoint table, authentication, and the chat flow every protocol shares.

Each client protocol (``api/openai.py``, and the Anthropic and Ollama ones) parses its own request
into the internal OpenAI shape and encodes the result back; everything in between — who is calling,
the limits, routing, calling the backend, timing, the traffic entry — is :meth:`ClientAPI.run_chat`,
written once.

Limits are checked where the information they need first exists: the per-IP rate limit before
anything else (so key guessing is limited too), the per-key one right after authentication, the
per-profile one and the concurrent-stream cap just before routing (see ``api/limits.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lm_gateway.api.auth import Identity, authenticate_client
from lm_gateway.api.common import BodyLimits, error_message, parse_json_object, request_id
from lm_gateway.api.limits import Limits, LimitStores, Refusal
from lm_gateway.backends import Backend, BackendError, ChatStream, Completion
from lm_gateway.http.server import Request, Response, StreamResponse, error_response
from lm_gateway.protocols import ProtocolError, anthropic, ollama, openai
from lm_gateway.protocols.shapes import Shape, first_problem
from lm_gateway.router import Caller, RouteDecision, RoutingError, Served, default_call, serve
from lm_gateway.router.explain import route_header
from lm_gateway.traffic import TrafficEntry

if TYPE_CHECKING:
    from lm_gateway.server import Gateway
    from lm_gateway.state import GatewayState

perf = time.perf_counter
log = logging.getLogger("lm_gateway.api")
CLIENT_GONE = "client disconnected before the answer"
# What reading a malformed request inside routing or translation raises (a ProtocolError is a
# ValueError): answered as 400 ``untranslatable_request``, never as a 500.
UNREADABLE_REQUEST = (ValueError, TypeError, AttributeError, KeyError, IndexError)
HEALTHZ = b'{"status":"ok"}'
Endpoint = Callable[[Request, str], Awaitable[Response | StreamResponse]]
# Turns an OpenAI-shaped error response into a protocol's own shape (headers kept).
ErrorShape = Callable[[Response], Response]
# Never rate limited: health checks must work whatever the load.
UNLIMITED_PATHS = frozenset({"/healthz", "/status"})


class ChatFailed(Exception):
    """A chat request that ended in an error; carries what the protocol needs to shape its answer."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str,
        retry_after: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.retry_after = retry_after
        # Extra response headers (a limit's Retry-After and X-RateLimit-*).
        self.headers = headers or []

    def response_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` plus this failure's own: a numeric upstream ``Retry-After``, a limit's headers."""
        if self.retry_after and self.retry_after.isdigit():
            headers.append(("retry-after", self.retry_after))
        headers.extend(self.headers)
        return headers


class ClientAPI:
    def __init__(self, gateway: Gateway) -> None:
        from lm_gateway.api.anthropic import AnthropicEndpoints
        from lm_gateway.api.ollama import OllamaEndpoints
        from lm_gateway.api.openai import OpenAIEndpoints
        from lm_gateway.api.status import StatusEndpoint

        self.gateway = gateway
        self.routes: dict[tuple[str, str], Endpoint] = {}
        # Per path, how an error is reshaped for that path's protocol (absent: the OpenAI shape).
        self.error_shapes: dict[str, ErrorShape] = {}
        self.limit_stores = LimitStores()
        self._limits_state: GatewayState | None = None
        self.body_limits = BodyLimits()
        # Each backend's key as bytes, to scrub what its upstream sends back (see scrubbed()).
        self._secrets: dict[str, bytes | None] = {}
        self.limits = self._current_limits()
        # Stream slots (max_concurrent_streams) held by streams being sent, by id of their entry.
        self._stream_slots: dict[int, Callable[[], None]] = {}
        OpenAIEndpoints(self).register(self.routes)
        AnthropicEndpoints(self).register(self.routes)
        OllamaEndpoints(self).register(self.routes)
        StatusEndpoint(self).register(self.routes)
        # The methods each path answers (the Allow header of a 405).
        allowed: dict[str, list[str]] = {"/healthz": ["GET", "HEAD"]}
        for method, route_path in self.routes:
            allowed.setdefault(route_path, []).append(method)
        self._allowed = {route_path: ", ".join(sorted(methods)) for route_path, methods in allowed.items()}

    async def handle(self, request: Request) -> Response | StreamResponse:
        path = request.path
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            # Never behind auth or limits: container health checks must work whatever the keys.
            return Response(200, HEALTHZ, [("content-type", "application/json")])
        rid = request_id(request)
        handler = self.routes.get((request.method, path))
        if handler is not None:
            if self.gateway.state is not self._limits_state:
                self._current_limits()
            if self.limits.before_auth:
                refused = await self._before_auth(request, rid)
                if refused is not None:
                    return refused
            return await handler(request, rid)
        allow = self._allowed.get(path)
        if allow is not None:
            response = error_response(
                405,
                f"method {request.method[:20]} not allowed on {path}",
                code="method_not_allowed",
                headers=[("allow", allow)],
            )
            shape = self.error_shapes.get(path)
            if shape is not None:
                response = shape(response)
        else:
            response = error_response(
                404, f"no such endpoint: {request.method} {path[:200]}", code="not_found"
            )
        response.headers.append(("x-request-id", rid))
        return response

    def _current_limits(self) -> Limits:
        """The limits of the running config, rebuilt when a reload swapped the state (an identity
        check per request); the buckets and stream counts carry over."""
        state = self.gateway.state
        if state is not self._limits_state:
            self.limits = Limits(state.config, self.limit_stores)
            gateway = state.config.gateway
            self.body_limits = BodyLimits(gateway.max_json_depth, gateway.max_messages)
            self._secrets = {name: backend.key_bytes for name, backend in state.backends.items()}
            self._limits_state = state
        return self.limits

    async def _before_auth(self, request: Request, rid: str) -> Response | None:
        """The client's address behind trusted proxies, and the per-IP rate limit."""
        limits = self.limits
        if limits.trusted is not None:
            request.peer = limits.client_ip(request)
        if limits.ip is None or request.path in UNLIMITED_PATHS:
            return None
        refusal = await limits.check_ip(request.peer)
        return None if refusal is None else self.refuse(request, rid, refusal.response(), perf())

    def refuse(self, request: Request, rid: str, response: Response, started: float) -> Response:
        """Record a request refused before its endpoint ran, answered in its path's protocol shape."""
        self.record_refusal(request, rid, response, started)
        shape = self.error_shapes.get(request.path)
        return shape(response) if shape is not None else response

    # -- the shared chat flow ----------------------------------------------------------------------

    async def identify(self, request: Request) -> Identity | Response:
        """Who is calling (or the 401 to answer), within the key's own rate limit (or its 429)."""
        who = authenticate_client(self.gateway.state, request)
        if isinstance(who, Response) or not who.keyed or not self.limits.clients:
            return who
        refusal = await self.limits.check_client(who.name)
        return who if refusal is None else _KeyRefused(who, refusal.response())

    def parse_body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object within the body limits, upstream-steering fields dropped
        (:func:`~lm_gateway.api.common.parse_json_object`); :class:`BadRequest` otherwise."""
        return parse_json_object(request, self.body_limits)

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
        limits = self.limits
        admit = limits.profiles or limits.streams or limits.spend
        release = await self._admit(who, body, entry, started) if admit else None
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
        except BaseException as exc:
            if release is not None:
                release()
            failure = self._failure(entry, started, exc, call.body if isinstance(call, NativeCall) else body)
            if failure is None:
                raise
            raise failure from exc
        if release is not None:
            if served.stream is None:
                release()
            else:
                self._stream_slots[id(entry)] = release
        entry.overhead_ms = (perf() - started - served.upstream_s) * 1000
        if served.completion is not None:
            secret = self._secrets.get(entry.backend) if entry.backend is not None else None
            if secret is not None:
                served.completion.body = scrubbed(served.completion.body, secret)
            entry.status = 200
            entry.latency_ms = (perf() - started) * 1000
            entry.prompt_tokens = served.completion.prompt_tokens
            entry.completion_tokens = served.completion.completion_tokens
            self.gateway.traffic.record(entry)
        return served

    def _failure(
        self, entry: TrafficEntry, started: float, exc: BaseException, sent: dict[str, Any]
    ) -> ChatFailed | None:
        """The recorded :class:`ChatFailed` a failed :func:`serve` becomes, or None when ``exc``
        goes on as it is (recorded as a 499 when the client went away: the upstream call died with
        its task). ``sent``: the request as the client sent it, to say what was wrong with it."""
        if isinstance(exc, RoutingError):
            return self.fail(entry, started, ChatFailed(exc.status, exc.message, exc.code, exc.type))
        if isinstance(exc, BackendError):
            failure = ChatFailed(exc.status, exc.message, exc.code, exc.type, exc.retry_after)
            return self.fail(entry, started, failure)
        if isinstance(exc, UNREADABLE_REQUEST):
            return self.fail(entry, started, _untranslatable(entry, exc, sent))
        if isinstance(exc, asyncio.CancelledError):
            self.fail(entry, started, ChatFailed(499, CLIENT_GONE, "client_disconnected", "client_error"))
        return None

    async def _admit(
        self, who: Identity, body: dict[str, Any], entry: TrafficEntry, started: float
    ) -> Callable[[], None] | None:
        """The profile's rate limit, the key's spend cap and stream cap; the stream slot's release,
        if taken."""
        limits = self.limits
        if limits.profiles:
            refusal = await limits.check_profile(self._limited_profile(who, body))
            if refusal is not None:
                raise self.fail(entry, started, _limit_failure(refusal))
        if limits.spend and who.keyed:
            refusal = await limits.check_spend(who.name)
            if refusal is not None:
                raise self.fail(entry, started, _limit_failure(refusal))
        if not (limits.streams and entry.stream and who.keyed):
            return None
        slot = await limits.open_stream(who.name)
        if isinstance(slot, Refusal):
            raise self.fail(entry, started, _limit_failure(slot))
        return slot

    def record_spend(self, entry: TrafficEntry) -> None:
        """A traffic log listener: charge a finished request to its client's spend cap, if any."""
        if self.limits.spend:  # (no cap configured: one attribute test per entry, nothing else)
            self.limits.record_spend(entry)

    def _limited_profile(self, who: Identity, body: dict[str, Any]) -> str:
        """The profile whose rate limit a request spends: the one its model names, else its key's
        (or the public or default one)."""
        model = body.get("model")
        state = self.gateway.state
        if isinstance(model, str) and model in state.config.profiles:
            return model
        return state.table.profile(who.profile).name

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
        if who is None and isinstance(response, _KeyRefused):
            who = response.who
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
        timing = _StreamTiming(started, self._secrets.get(entry.backend or ""))

        def finished(completed: bool) -> None:
            release = self._stream_slots.pop(id(entry), None)
            if release is not None:
                release()
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

    __slots__ = ("always", "body", "headers", "path", "prepare", "protocol", "used")

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
        self.headers: dict[str, str] | None = None  # the client's headers its protocol passes on

    async def __call__(
        self, backend: Backend, decision: RouteDecision, internal: dict[str, Any], stream: bool
    ) -> Completion | ChatStream:
        if not self.always and backend.protocol != self.protocol:
            return await default_call(backend, decision, internal, stream)
        self.used = True
        self.prepare(self.body, decision)
        return await backend.forward(self.path, self.body, stream, self.headers)


class _KeyRefused(Response):
    """A valid key refused by its own rate limit: the traffic entry names the key's client."""

    __slots__ = ("who",)

    def __init__(self, who: Identity, response: Response) -> None:
        super().__init__(response.status, response.body, response.headers)
        self.who = who


def _untranslatable(entry: TrafficEntry, exc: Exception, sent: dict[str, Any]) -> ChatFailed:
    """A request the translation towards the chosen backend could not read (a content part of the
    wrong type, a malformed tool call): the client's mistake, so a 400 rather than a 500, naming the
    field to fix. Anything else a translator raises on a request of the right shape may be a gateway
    bug, so it is logged with its traceback."""
    where = f" for tier '{entry.tier}'" if entry.tier else ""
    if problem := request_problem(entry.endpoint, sent):
        reason = problem
    elif isinstance(exc, ProtocolError):
        reason = f"ProtocolError: {str(exc)[:300]}"
    else:
        log.warning("request %s could not be translated for tier %s", entry.id, entry.tier, exc_info=exc)
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
    return ChatFailed(
        400,
        f"the request cannot be translated{where}: {reason}",
        "untranslatable_request",
        "invalid_request_error",
    )


REQUEST_SHAPES: dict[str, Shape] = {
    "/v1/chat/completions": openai.CHAT_REQUEST,
    "/v1/messages": anthropic.MESSAGES_REQUEST,
    "/v1/messages/count_tokens": anthropic.MESSAGES_REQUEST,
    "/api/chat": ollama.CHAT_REQUEST,
    "/api/generate": ollama.GENERATE_REQUEST,
}
"""Each client endpoint's request shape (:mod:`lm_gateway.protocols.shapes`)."""


def request_problem(path: str, body: dict[str, Any]) -> str | None:
    """The field of a request to ``path`` that is not of its protocol's shape, in words (for a
    request a translator could not read), or None."""
    shape = REQUEST_SHAPES.get(path)
    return first_problem(body, shape) if shape is not None else None


def _limit_failure(refusal: Refusal) -> ChatFailed:
    return ChatFailed(429, refusal.message, refusal.code, "rate_limit_error", headers=refusal.headers)


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


def scrubbed(data: bytes, secret: bytes | None) -> bytes:
    """``data`` without ``secret`` (a backend's key an upstream echoed back)."""
    return data if secret is None or secret not in data else data.replace(secret, b"***")


class _StreamTiming:
    """Notes when the first chunk of a stream went out."""

    __slots__ = ("first_chunk_ms", "secret", "started")

    def __init__(self, started: float, secret: bytes | None) -> None:
        self.started = started
        self.secret = secret
        self.first_chunk_ms: float | None = None

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        secret = self.secret
        try:
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                return
            self.first_chunk_ms = (perf() - self.started) * 1000
            if secret is None:  # a backend without a key: nothing to scrub, nothing to pay
                yield first
                async for chunk in chunks:
                    yield chunk
            else:
                yield scrubbed(first, secret)
                async for chunk in chunks:
                    yield scrubbed(chunk, secret)
        finally:
            # Closing this wrapper early (client gone) must close the upstream relay too.
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()
