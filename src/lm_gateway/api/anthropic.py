"""Anthropic Messages API for clients (Claude Code, the ``anthropic`` SDK): ``/v1/messages`` and
``/v1/messages/count_tokens``, routed through the same profiles and tiers to any backend.

When the chosen backend is Anthropic too, the client's request is forwarded as it is (only ``model``
and the profile's system prompt changed) and the answer relayed byte for byte; otherwise the request
is translated to the internal format and the answer back, streams included. Errors use Anthropic's
shape. The key may come as ``x-api-key`` or ``Authorization: Bearer`` (the SDK sends the latter).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway.api.client import ChatFailed, Endpoint, NativeCall, request_problem, routing_headers
from lm_gateway.api.common import BadRequest, reshaped_error, stream_headers
from lm_gateway.api.translate import reencode
from lm_gateway.backends import Backend, BackendError, ChatStream, Completion
from lm_gateway.http.server import Request, Response, StreamResponse, error_response, json_response
from lm_gateway.protocols import ProtocolError
from lm_gateway.protocols import anthropic as wire
from lm_gateway.protocols.openai import content_text
from lm_gateway.protocols.sse import encode_event
from lm_gateway.router import RouteDecision

if TYPE_CHECKING:
    from lm_gateway.api.client import ClientAPI

perf = time.perf_counter
SSE_HEADERS = stream_headers("text/event-stream")
MESSAGES = "/v1/messages"
# ``anthropic-beta``: feature names (``prompt-caching-2024-07-31,...``), the one client header an
# Anthropic tier is sent (on the untouched passthrough only); anything else in it is refused.
_BETA_RE = re.compile(r"[A-Za-z0-9._-]{1,100}(?:\s*,\s*[A-Za-z0-9._-]{1,100}){0,31}")


def anthropic_error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, wire.error_body(message, wire.error_type_for_status(status)), headers)


def _from_openai_error(response: Response) -> Response:
    return reshaped_error(
        response, lambda status, message: wire.error_body(message, wire.error_type_for_status(status))
    )


def _error_frame(message: str, type_: str) -> bytes:
    return encode_event(orjson.dumps(wire.error_body(message, type_ or "api_error")), event="error")


def _native_preparer(body: dict[str, Any]) -> Callable[[dict[str, Any], RouteDecision], None]:
    """How the client's own request is readied for an Anthropic tier: its ``model``, and the profile's
    system prompt put before the client's (a string joins as text, a block list gets a text block
    first, so the client's ``cache_control`` markers stay where they were).

    Built from the client's original ``system``, so preparing again for a retry or a failover tier
    rewrites the same values instead of stacking the profile's prompt once per attempt.
    """
    system = body.get("system")

    def prepare(body: dict[str, Any], decision: RouteDecision) -> None:
        body["model"] = decision.tier.model
        prompt = decision.profile.system_prompt
        if not prompt:
            return
        if isinstance(system, list):
            body["system"] = [{"type": "text", "text": prompt}, *system]
        elif isinstance(system, str) and system:
            body["system"] = f"{prompt}\n\n{system}"
        else:
            body["system"] = prompt

    return prepare


class AnthropicEndpoints:
    def __init__(self, api: ClientAPI) -> None:
        self.api = api

    def register(self, routes: dict[tuple[str, str], Endpoint]) -> None:
        routes[("POST", MESSAGES)] = self.messages
        routes[("POST", MESSAGES + "/count_tokens")] = self.count_tokens
        for path in (MESSAGES, MESSAGES + "/count_tokens"):
            self.api.error_shapes[path] = _from_openai_error

    async def messages(self, request: Request, rid: str) -> Response | StreamResponse:
        started = perf()
        api = self.api
        who = await api.identify(request)
        if isinstance(who, Response):
            return _from_openai_error(api.record_refusal(request, rid, who, started))
        try:
            body = api.parse_body(request)
            internal, untranslatable = _internal_request(body)
        except BadRequest as bad:
            return _from_openai_error(api.record_refusal(request, rid, bad.response, started, who))
        beta = request.headers.get("anthropic-beta")
        if beta is not None and not _BETA_RE.fullmatch(beta):
            bad_beta = error_response(
                400,
                "the anthropic-beta header must be a comma-separated list of feature names",
                code="invalid_anthropic_beta",
            )
            return _from_openai_error(api.record_refusal(request, rid, bad_beta, started, who))
        model = body.get("model")
        entry = api.new_entry(rid, request, who, model, body.get("stream") is True)
        native = _AnthropicClientCall(body, untranslatable)
        if beta is not None:  # an Anthropic tier gets it (Claude Code's beta features need it)
            native.headers = {"anthropic-beta": beta}
        try:
            served = await api.run_chat(request, who, internal, entry, started, call=native)
        except ChatFailed as failure:
            return anthropic_error(
                failure.status, failure.message, failure.response_headers(routing_headers(rid, entry))
            )
        headers = routing_headers(rid, entry)
        client_model = model if isinstance(model, str) else entry.model or ""
        if served.stream is not None:
            chunks = aiter(served.stream)
            if not native.used:
                translator = wire.StreamFromOpenAI(client_model)
                chunks = reencode(served.stream, translator, _error_frame)
            relay, finished = api.watch_stream(entry, served.stream, chunks, started)
            return StreamResponse(200, relay, headers + SSE_HEADERS, on_close=finished)
        assert served.completion is not None
        headers.append(("content-type", "application/json"))
        if native.used:
            return Response(200, served.completion.body, headers)
        answer = wire.response_from_openai(orjson.loads(served.completion.body), model=client_model)
        return Response(200, orjson.dumps(answer), headers)

    async def count_tokens(self, request: Request, rid: str) -> Response:
        """An estimate (no tokenizer): enough for clients that budget their context."""
        who = await self.api.identify(request)
        if isinstance(who, Response):
            return _from_openai_error(who)
        try:
            body = self.api.parse_body(request)
            _check_messages_request(body)
        except BadRequest as bad:
            return _from_openai_error(bad.response)
        try:
            estimate = wire.count_tokens_estimate(body)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # The estimate reads fields of any shape; one it cannot read is the client's mistake.
            return anthropic_error(400, f"invalid request: {_what_is_wrong(body, exc)}")
        return json_response(200, {"input_tokens": estimate}, [("x-request-id", rid)])


def _internal_request(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The internal request to route (and, for non-Anthropic tiers, to send), and why it cannot be
    translated when it cannot.

    A request using what only Anthropic has (server tools such as web search, newer content blocks)
    still routes, on a text-only view of it: an Anthropic tier gets it forwarded as it is, any other
    tier refuses it (:class:`_AnthropicClientCall`). Only malformed requests are refused up front.
    """
    _check_messages_request(body)
    try:
        return wire.request_to_openai(body), None
    except ProtocolError as exc:
        return _text_view(body), str(exc)
    except (TypeError, AttributeError, KeyError) as exc:
        raise BadRequest(anthropic_error(400, f"invalid request: {_what_is_wrong(body, exc)}")) from exc


def _what_is_wrong(body: dict[str, Any], exc: Exception) -> str:
    """The field of a request the translation could not read, or (none found) the failure itself."""
    return request_problem(MESSAGES, body) or f"{type(exc).__name__}: {str(exc)[:200]}"


def _check_messages_request(body: dict[str, Any]) -> None:
    """What a Messages request needs before anything reads it: messages and a model."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(anthropic_error(400, "messages: must be a non-empty array"))
    if not isinstance(body.get("model"), str):
        raise BadRequest(anthropic_error(400, "model: must be a string"))


def _text_view(body: dict[str, Any]) -> dict[str, Any]:
    """Just what routing reads (model, roles and text, stream) of a request that does not translate."""
    system = content_text(body.get("system"), "\n\n")
    messages = [{"role": "system", "content": system}] if system else []
    for message in body["messages"]:
        if isinstance(message, dict):
            role = "assistant" if message.get("role") == "assistant" else "user"
            messages.append({"role": role, "content": content_text(message.get("content"))})
    return {"model": body["model"], "messages": messages, "stream": body.get("stream") is True}


class _AnthropicClientCall(NativeCall):
    """The caller for Anthropic clients: an Anthropic tier gets the client's own request; another
    tier gets the translated one, or a 400 when the request has no translation."""

    __slots__ = ("untranslatable",)

    def __init__(self, body: dict[str, Any], untranslatable: str | None) -> None:
        super().__init__("anthropic", MESSAGES, body, _native_preparer(body))
        self.untranslatable = untranslatable

    async def __call__(
        self, backend: Backend, decision: RouteDecision, internal: dict[str, Any], stream: bool
    ) -> Completion | ChatStream:
        if self.untranslatable is not None and backend.protocol != "anthropic":
            raise BackendError(
                400,
                f"tier '{decision.tier.name}' is not an Anthropic backend and this request cannot be "
                f"translated for it: {self.untranslatable}",
                code="untranslatable_request",
                type_="invalid_request_error",
            )
        return await super().__call__(backend, decision, internal, stream)
