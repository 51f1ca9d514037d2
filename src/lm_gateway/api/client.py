"""Client-facing OpenAI-compatible API (the client port).

The hot path of a chat request: parse the body once, route (rewrites ``model``), hand the dict to the
backend, send back the backend's bytes, record one traffic entry. Routing decisions live in the router,
wire formats in the backends; this module only deals with HTTP: statuses, headers, error shapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway.api.auth import Identity, authenticate_client
from lm_gateway.api.common import BadRequest, check_chat_body, parse_json_object, request_id
from lm_gateway.backends import BackendError, ChatStream
from lm_gateway.http.server import Request, Response, StreamResponse, error_response, json_response
from lm_gateway.router import RouteDecision, RoutingError, route
from lm_gateway.traffic import TrafficEntry

if TYPE_CHECKING:
    from lm_gateway.server import Gateway

perf = time.perf_counter
JSON = "application/json"
SSE_HEADERS = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]
HEALTHZ = b'{"status":"ok"}'


class ClientAPI:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._routes: dict[
            tuple[str, str], Callable[[Request, str], Awaitable[Response | StreamResponse]]
        ] = {
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("GET", "/v1/models"): self.models,
        }

    async def handle(self, request: Request) -> Response | StreamResponse:
        path = request.path
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            # Never behind auth or limits: container health checks must work whatever the keys.
            return Response(200, HEALTHZ, [("content-type", JSON)])
        rid = request_id(request)
        handler = self._routes.get((request.method, path))
        if handler is None:
            known = any(p == path for _, p in self._routes)
            response = (
                error_response(
                    405, f"method {request.method} not allowed on {path}", code="method_not_allowed"
                )
                if known
                else error_response(404, f"no such endpoint: {request.method} {path[:200]}", code="not_found")
            )
            response.headers.append(("x-request-id", rid))
            return response
        return await handler(request, rid)

    async def models(self, request: Request, rid: str) -> Response:
        state = self.gateway.state
        who = authenticate_client(state, request)
        if isinstance(who, Response):
            return _with_id(who, rid)
        created = int(self.gateway.started_at)
        config = state.config
        data: list[dict[str, Any]] = []
        for tier in config.tiers:
            data.append({"id": tier.name, "object": "model", "created": created, "owned_by": tier.backend})
        for alias, target in config.aliases.items():
            entry = {"id": alias, "object": "model", "created": created, "owned_by": "alias"}
            entry["lm_gateway"] = {"resolves_to": target}
            data.append(entry)
        for name, profile in config.profiles.items():
            if who.profile is not None and name != who.profile:
                continue
            entry = {"id": name, "object": "model", "created": created, "owned_by": "profile"}
            entry["lm_gateway"] = {"mode": str(profile.mode)}
            data.append(entry)
        return json_response(200, {"object": "list", "data": data}, [("x-request-id", rid)])

    async def chat_completions(self, request: Request, rid: str) -> Response | StreamResponse:
        started = perf()
        state = self.gateway.state
        who = authenticate_client(state, request)
        if isinstance(who, Response):
            return self._fail(_with_id(who, rid), rid, request, None, started, None)
        try:
            body = parse_json_object(request)
            check_chat_body(body)
        except BadRequest as bad:
            return self._fail(_with_id(bad.response, rid), rid, request, who, started, None)
        entry = self._entry(rid, request, who, body)
        headers = request.headers
        expert = headers.get("x-lmg-expert", "").strip().lower() == "true"
        try:
            decision = route(state.table, body, bound_profile=who.profile, expert=expert)
        except RoutingError as err:
            response = error_response(err.status, err.message, type_=err.type, code=err.code)
            return self._fail(_with_id(response, rid), rid, request, who, started, entry)
        entry.profile = decision.profile.name
        entry.mode = decision.mode
        if decision.tier is None:
            return self._reply(decision, entry, rid, started)
        tier = decision.tier
        backend = state.backends[tier.backend]
        entry.tier, entry.backend, entry.model = tier.name, backend.name, tier.model
        out_headers = [
            ("x-request-id", rid),
            ("x-lmg-tier", tier.name),
            ("x-lmg-model", _header_safe(tier.model)),
            ("x-lmg-profile", decision.profile.name),
        ]
        if entry.stream:
            return await self._stream(backend.chat_stream(body, tier), entry, out_headers, started)
        upstream_started = perf()
        try:
            completion = await backend.chat(body, tier)
        except BackendError as err:
            return self._backend_failed(err, entry, rid, started)
        upstream_ms = (perf() - upstream_started) * 1000
        total_ms = (perf() - started) * 1000
        overhead = total_ms - upstream_ms
        out_headers.append(("x-lmg-overhead-ms", f"{overhead:.3f}"))
        out_headers.append(("content-type", JSON))
        entry.status = 200
        entry.latency_ms = total_ms
        entry.overhead_ms = overhead
        entry.prompt_tokens = completion.prompt_tokens
        entry.completion_tokens = completion.completion_tokens
        self.gateway.traffic.record(entry)
        return Response(200, completion.body, out_headers)

    async def _stream(
        self,
        opening: Awaitable[ChatStream],
        entry: TrafficEntry,
        headers: list[tuple[str, str]],
        started: float,
    ) -> Response | StreamResponse:
        upstream_started = perf()
        try:
            stream = await opening
        except BackendError as err:
            return self._backend_failed(err, entry, headers[0][1], started)
        # Until the upstream's headers arrive the time is the upstream's; before that it is ours.
        overhead_ms = (upstream_started - started) * 1000
        headers.extend(SSE_HEADERS)
        headers.append(("x-lmg-overhead-ms", f"{overhead_ms:.3f}"))
        entry.overhead_ms = overhead_ms
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

        return StreamResponse(200, timing.watch(stream), headers, on_close=finished)

    def _reply(self, decision: RouteDecision, entry: TrafficEntry, rid: str, started: float) -> Response:
        """Reply mode: a fixed answer, no backend. Streamed requests get it as a one-chunk stream."""
        text = decision.reply_text or ""
        entry.tier, entry.backend, entry.status = "reply", None, 200
        created = int(time.time())
        headers = [("x-request-id", rid), ("x-lmg-tier", "reply"), ("x-lmg-profile", decision.profile.name)]
        if entry.stream:
            chunk = {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": "reply",
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }
            body = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
            headers.extend(SSE_HEADERS)
        else:
            payload = {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": created,
                "model": "reply",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
            body = orjson.dumps(payload)
            headers.append(("content-type", JSON))
        entry.latency_ms = (perf() - started) * 1000
        self.gateway.traffic.record(entry)
        return Response(200, body, headers)

    def _backend_failed(self, err: BackendError, entry: TrafficEntry, rid: str, started: float) -> Response:
        extra = [("x-request-id", rid)]
        if entry.tier is not None:
            extra.append(("x-lmg-tier", entry.tier))
        if err.retry_after and err.retry_after.isdigit():
            extra.append(("retry-after", err.retry_after))
        response = error_response(err.status, err.message, type_=err.type, code=err.code, headers=extra)
        entry.status, entry.error = err.status, err.message
        entry.latency_ms = (perf() - started) * 1000
        self.gateway.traffic.record(entry)
        return response

    def _entry(
        self, rid: str, request: Request, who: Identity | None, body: dict[str, Any] | None
    ) -> TrafficEntry:
        model = body.get("model") if body is not None else None
        return TrafficEntry(
            id=rid,
            started=time.time(),
            client=who.name if who is not None else request.peer,
            profile=self.gateway.state.table.profile(who.profile).name if who is not None else None,
            requested_model=model[:200] if isinstance(model, str) else None,
            endpoint=request.path,
            stream=bool(body.get("stream")) if body is not None else False,
        )

    def _fail(
        self,
        response: Response,
        rid: str,
        request: Request,
        who: Identity | None,
        started: float,
        entry: TrafficEntry | None,
    ) -> Response:
        """Record a request refused before it reached a backend (auth, bad body, routing)."""
        if entry is None:
            entry = self._entry(rid, request, who, None)
        entry.status = response.status
        entry.error = _error_message(response.body)
        entry.latency_ms = (perf() - started) * 1000
        self.gateway.traffic.record(entry)
        return response


class _StreamTiming:
    """Notes when the first chunk of a stream went out, without re-wrapping every chunk afterwards."""

    __slots__ = ("first_chunk_ms", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_chunk_ms: float | None = None

    async def watch(self, stream: ChatStream) -> AsyncIterator[bytes]:
        chunks = aiter(stream)
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


def _with_id(response: Response, rid: str) -> Response:
    response.headers.append(("x-request-id", rid))
    return response


def _header_safe(value: str) -> str:
    return (
        value
        if value.isascii() and "\r" not in value and "\n" not in value
        else value.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")
    )


def _error_message(body: bytes) -> str | None:
    try:
        return str(orjson.loads(body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
