"""OpenAI-compatible client endpoints: ``/v1/chat/completions`` and ``/v1/models``.

Same protocol as the internal one, so a chat answer is the backend's bytes, sent as they came.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lm_gateway.api.client import ChatFailed, Endpoint, NativeCall, routing_headers
from lm_gateway.api.common import BadRequest, check_chat_body, stream_headers
from lm_gateway.http.server import Request, Response, StreamResponse, error_response, json_response
from lm_gateway.router import RouteDecision, Served, default_call
from lm_gateway.traffic import TrafficEntry

if TYPE_CHECKING:
    from lm_gateway.api.client import ClientAPI

perf = time.perf_counter
JSON_HEADER = ("content-type", "application/json")
SSE_HEADERS = stream_headers("text/event-stream")


class OpenAIEndpoints:
    def __init__(self, api: ClientAPI) -> None:
        self.api = api

    def register(self, routes: dict[tuple[str, str], Endpoint]) -> None:
        routes[("POST", "/v1/chat/completions")] = self.chat_completions
        routes[("GET", "/v1/models")] = self.models
        routes[("POST", "/v1/embeddings")] = self.embeddings
        routes[("POST", "/v1/completions")] = self.completions

    async def chat_completions(self, request: Request, rid: str) -> Response | StreamResponse:
        return await self._serve(request, rid, None)

    async def embeddings(self, request: Request, rid: str) -> Response | StreamResponse:
        return await self._serve(request, rid, "/v1/embeddings")

    async def completions(self, request: Request, rid: str) -> Response | StreamResponse:
        """The legacy completions API, passed through to backends that still serve it."""
        return await self._serve(request, rid, "/v1/completions")

    async def _serve(self, request: Request, rid: str, forward_to: str | None) -> Response | StreamResponse:
        """Chat completions (``forward_to`` None), or an endpoint that exists only in the backend's own
        API, routed by model and forwarded as it is (a backend that cannot serve it answers 400)."""
        started = perf()
        api = self.api
        who = await api.identify(request)
        if isinstance(who, Response):
            return api.record_refusal(request, rid, who, started)
        try:
            body = api.parse_body(request)
            if forward_to is None:
                check_chat_body(body)
        except BadRequest as bad:
            return api.record_refusal(request, rid, bad.response, started, who)
        entry = api.new_entry(rid, request, who, body.get("model"), body.get("stream") is True)
        call = (
            default_call
            if forward_to is None
            else NativeCall("openai", forward_to, body, _set_model, always=True)
        )
        try:
            served = await api.run_chat(request, who, body, entry, started, call=call)
        except ChatFailed as failure:
            return openai_error(failure, routing_headers(rid, entry))
        return self._answer(served, entry, rid, started)

    def _answer(
        self, served: Served, entry: TrafficEntry, rid: str, started: float
    ) -> Response | StreamResponse:
        headers = routing_headers(rid, entry)
        if served.stream is not None:
            chunks, finished = self.api.watch_stream(entry, served.stream, aiter(served.stream), started)
            return StreamResponse(200, chunks, headers + SSE_HEADERS, on_close=finished)
        assert served.completion is not None
        headers.append(JSON_HEADER)
        return Response(200, served.completion.body, headers)

    async def models(self, request: Request, rid: str) -> Response:
        who = await self.api.identify(request)
        if isinstance(who, Response):
            who.headers.append(("x-request-id", rid))
            return who
        gateway = self.api.gateway
        config = gateway.state.config
        created = int(gateway.started_at)
        data: list[dict[str, Any]] = []
        for tier in config.tiers:
            data.append({"id": tier.name, "object": "model", "created": created, "owned_by": tier.backend})
        for alias, target in config.aliases.items():
            item = {"id": alias, "object": "model", "created": created, "owned_by": "alias"}
            item["lm_gateway"] = {"resolves_to": target}
            data.append(item)
        for name, profile in config.profiles.items():
            if who.profile is not None and name != who.profile:
                continue
            item = {"id": name, "object": "model", "created": created, "owned_by": "profile"}
            item["lm_gateway"] = {"mode": str(profile.mode)}
            data.append(item)
        return json_response(200, {"object": "list", "data": data}, [("x-request-id", rid)])


def _set_model(body: dict[str, Any], decision: RouteDecision) -> None:
    body["model"] = decision.tier.model


def openai_error(failure: ChatFailed, headers: list[tuple[str, str]]) -> Response:
    return error_response(
        failure.status,
        failure.message,
        type_=failure.type,
        code=failure.code,
        headers=failure.response_headers(headers),
    )
