"""Ollama-compatible endpoints for Ollama clients (Home Assistant, Open WebUI …): ``/api/tags``,
``/api/chat``, ``/api/generate``, ``/api/show``, ``/api/version``.

The gateway's profiles appear as models (``auto:latest`` runs the ``auto`` profile); tiers and aliases
work as model names too. An Ollama backend gets the client's request as it is; any other backend gets
it translated, and the answer comes back as NDJSON (streaming is the default, as in Ollama) ending in
one ``done: true`` line with empty content and real token counts. Errors are HTTP errors in Ollama's
``{"error": ...}`` shape, or, for a profile with ``ollama_errors_as_message``, the assistant's answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway.api.client import ChatFailed, Endpoint, NativeCall, request_problem, routing_headers
from lm_gateway.api.common import BadRequest, reshaped_error, stream_headers
from lm_gateway.api.translate import StreamTranslator, reencode
from lm_gateway.backends import Backend, ChatStream, Completion
from lm_gateway.http.server import Request, Response, StreamResponse, json_response
from lm_gateway.protocols import ProtocolError
from lm_gateway.protocols import ollama as wire
from lm_gateway.protocols.ndjson import encode_line
from lm_gateway.router import RouteDecision, inject_system_prompt

if TYPE_CHECKING:
    from lm_gateway.api.auth import Identity
    from lm_gateway.api.client import ClientAPI

perf = time.perf_counter
NDJSON_HEADERS = stream_headers("application/x-ndjson")
LATEST = ":latest"


def ollama_error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def _from_openai_error(response: Response) -> Response:
    return reshaped_error(response, lambda _status, message: {"error": message})


def _line(obj: Any) -> bytes:
    return encode_line(obj)


def _error_line(message: str, _type: str) -> bytes:
    return encode_line(wire.error_line(message))


def _strip_latest(model: Any) -> Any:
    return model[: -len(LATEST)] if isinstance(model, str) and model.endswith(LATEST) else model


def _native_preparer(body: dict[str, Any]) -> Callable[[dict[str, Any], RouteDecision], None]:
    """How the client's own request is readied for an Ollama tier: its ``model``, and the profile's
    system prompt first (a system message for ``/api/chat``, the ``system`` field for
    ``/api/generate``).

    Built from the client's original messages and ``system``, so preparing again for a retry or a
    failover tier rewrites the same values instead of stacking the profile's prompt per attempt.
    """
    messages = body.get("messages")
    original = list(messages) if isinstance(messages, list) else None
    system = body.get("system")

    def prepare(body: dict[str, Any], decision: RouteDecision) -> None:
        body["model"] = decision.tier.model
        prompt = decision.profile.system_prompt
        if not prompt:
            return
        if original is not None:
            body["messages"] = list(original)
            inject_system_prompt(body, prompt)
        else:
            body["system"] = f"{prompt}\n\n{system}" if isinstance(system, str) and system else prompt

    return prepare


class _OllamaClientCall(NativeCall):
    """The caller for Ollama clients: an Ollama tier gets the client's own request; an OpenAI tier
    gets the internal one without the Ollama-only fields it carries (see
    :func:`~lm_gateway.protocols.ollama.request_for_openai_upstream`); an Anthropic tier translates
    them itself."""

    __slots__ = ()

    async def __call__(
        self, backend: Backend, decision: RouteDecision, internal: dict[str, Any], stream: bool
    ) -> Completion | ChatStream:
        if backend.protocol == "openai":
            internal = wire.request_for_openai_upstream(internal)
        return await super().__call__(backend, decision, internal, stream)


class OllamaEndpoints:
    def __init__(self, api: ClientAPI) -> None:
        self.api = api

    def register(self, routes: dict[tuple[str, str], Endpoint]) -> None:
        routes[("GET", "/api/tags")] = self.tags
        routes[("GET", "/api/version")] = self.version
        routes[("POST", "/api/show")] = self.show
        routes[("POST", "/api/chat")] = self.chat
        routes[("POST", "/api/generate")] = self.generate
        for _method, path in routes:
            if path.startswith("/api/"):
                self.api.error_shapes[path] = _from_openai_error

    async def version(self, request: Request, rid: str) -> Response:
        return json_response(200, wire.version_payload())

    async def tags(self, request: Request, rid: str) -> Response:
        who = await self.api.identify(request)
        if isinstance(who, Response):
            return _from_openai_error(who)
        return json_response(200, wire.tags_payload(self._model_names(who)), [("x-request-id", rid)])

    async def show(self, request: Request, rid: str) -> Response:
        who = await self.api.identify(request)
        if isinstance(who, Response):
            return _from_openai_error(who)
        try:
            body = self.api.parse_body(request)
        except BadRequest as bad:
            return _from_openai_error(bad.response)
        name = _strip_latest(body.get("model") or body.get("name"))
        if not isinstance(name, str) or name not in self._model_names(who):
            return ollama_error(404, f"model '{str(name)[:200]}' not found")
        return json_response(
            200, wire.show_payload(name, None, capabilities=["completion", "tools", "thinking"])
        )

    def _model_names(self, who: Identity) -> list[str]:
        config = self.api.gateway.state.config
        if who.profile is not None:
            names = [who.profile]
        else:
            names = sorted(config.profiles, key=lambda n: (n != "default", n))
        if config.gateway.ollama_list_tiers:
            names += [tier.name for tier in config.tiers] + list(config.aliases)
        return names

    async def chat(self, request: Request, rid: str) -> Response | StreamResponse:
        return await self._converse(request, rid, "/api/chat", wire.chat_request_to_openai, generate=False)

    async def generate(self, request: Request, rid: str) -> Response | StreamResponse:
        return await self._converse(
            request, rid, "/api/generate", wire.generate_request_to_openai, generate=True
        )

    async def _converse(
        self, request: Request, rid: str, path: str, to_internal: Any, *, generate: bool
    ) -> Response | StreamResponse:
        started = perf()
        api = self.api
        who = await api.identify(request)
        if isinstance(who, Response):
            return _from_openai_error(api.record_refusal(request, rid, who, started))
        try:
            body = api.parse_body(request)
        except BadRequest as bad:
            return _from_openai_error(api.record_refusal(request, rid, bad.response, started, who))
        try:
            internal = to_internal(body)
        except (ProtocolError, TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
            wrong = request_problem(path, body) or exc  # the field to fix, when one has the wrong type
            return api.record_refusal(
                request, rid, ollama_error(400, f"invalid request: {wrong}"), started, who
            )
        requested = body.get("model")
        if not isinstance(requested, str) or not requested:
            return api.record_refusal(request, rid, ollama_error(400, "model is required"), started, who)
        internal["model"] = _strip_latest(requested)
        stream = body.get("stream") is not False  # Ollama streams unless told not to
        internal["stream"] = stream
        if stream:
            internal["stream_options"] = {"include_usage": True}
        entry = api.new_entry(rid, request, who, requested, stream)
        native = _OllamaClientCall("ollama", path, body, _native_preparer(body))
        try:
            served = await api.run_chat(request, who, internal, entry, started, call=native)
        except ChatFailed as failure:
            headers = routing_headers(rid, entry)
            if not self._errors_as_message(entry.profile):
                return ollama_error(failure.status, failure.message, failure.response_headers(headers))
            return _spoken_failure(failure.message, requested, generate, stream, headers)
        headers = routing_headers(rid, entry)
        if served.stream is not None:
            chunks = aiter(served.stream)
            if not native.used:
                translator = _translator(requested, generate)
                error_line = _error_line
                if self._errors_as_message(entry.profile):
                    error_line = partial(_spoken_error_lines, translator)
                chunks = reencode(served.stream, translator, error_line)
            relay, finished = api.watch_stream(entry, served.stream, chunks, started)
            return StreamResponse(200, relay, headers + NDJSON_HEADERS, on_close=finished)
        assert served.completion is not None
        headers.append(("content-type", "application/json"))
        if native.used:
            return Response(200, served.completion.body, headers)
        answer = orjson.loads(served.completion.body)
        encode = wire.generate_response_from_openai if generate else wire.chat_response_from_openai
        return Response(200, orjson.dumps(encode(answer, model=requested)), headers)

    def _errors_as_message(self, profile: str | None) -> bool:
        """Whether the profile wants errors spoken as the assistant's answer (Home Assistant shows
        only message text, so a real HTTP error would leave its user with a generic failure)."""
        profiles = self.api.gateway.state.table.profiles
        return profile is not None and profile in profiles and profiles[profile].ollama_errors_as_message


def _translator(model: str, generate: bool) -> StreamTranslator:
    return wire.GenerateStreamFromOpenAI(model) if generate else wire.ChatStreamFromOpenAI(model)


def _apology(message: str) -> str:
    return f"Sorry, I can't answer right now: {message}"


def _spoken_error_lines(translator: StreamTranslator, message: str, _type: str) -> bytes:
    """The end of a stream that failed, for a profile that speaks errors: the error as a last piece
    of the answer, then the usual ``done: true`` line."""
    chunk = {"choices": [{"index": 0, "delta": {"content": _apology(message)}, "finish_reason": "stop"}]}
    return b"".join(_line(item) for item in translator.feed(chunk) + translator.finish())


def _spoken_failure(
    message: str, model: str, generate: bool, stream: bool, headers: list[tuple[str, str]]
) -> Response:
    """A request that failed before its answer, answered with HTTP 200 and the error as the message:
    NDJSON lines when the client asked for a stream, one JSON object otherwise."""
    if stream:
        body = _spoken_error_lines(_translator(model, generate), message, "")
        return Response(200, body, headers + NDJSON_HEADERS)
    said = {"role": "assistant", "content": _apology(message)}
    answer = {"choices": [{"index": 0, "message": said, "finish_reason": "stop"}]}
    encode = wire.generate_response_from_openai if generate else wire.chat_response_from_openai
    headers.append(("content-type", "application/json"))
    return Response(200, orjson.dumps(encode(answer, model=model)), headers)
