"""Anthropic Messages API upstreams (``/v1/messages``, ``x-api-key``, ``anthropic-version``).

Requests in the internal OpenAI shape are translated by ``lm_gateway.protocols.anthropic``; an
Anthropic client's own requests are forwarded untouched (``forward``), so cache control, thinking
signatures and anything newer than this gateway survive. Health is ``GET /v1/models``: no tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from lm_gateway.backends.base import BackendError, ChatStream, Completion, ProbeResult
from lm_gateway.backends.http import (
    HttpBackend,
    RawRelay,
    RelayFormat,
    TranslatedStream,
    last_json,
    wants_usage,
)
from lm_gateway.config.schema import BackendConfig, Secret, TierConfig
from lm_gateway.protocols import ProtocolError
from lm_gateway.protocols import anthropic as wire
from lm_gateway.protocols.sse import encode_event

API_VERSION = "2023-06-01"
MESSAGES = "/v1/messages"


_COUNT = re.compile(
    rb'"(input_tokens|output_tokens|cache_creation_input_tokens|cache_read_input_tokens)"[ \t]*:[ \t]*(\d+)'
)

_CACHE_COUNTS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def _token_counts(counts: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) with OpenAI's meaning of prompt tokens (input + cache writes + cache
    reads; Anthropic counts them apart), so a forwarded request is logged like a translated one."""
    values = {key: value for key, value in counts.items() if isinstance(value, int)}
    prompt = None
    if "input_tokens" in values:
        prompt = sum(values.get(key, 0) for key in ("input_tokens", *_CACHE_COUNTS))
    return prompt, values.get("output_tokens")


def _anthropic_usage(kept: bytes) -> tuple[int | None, int | None]:
    """Counts are cumulative: ``message_start`` has the input, the last ``message_delta`` the output
    (and, from newer API versions, the input again); the last value of each wins."""
    counts: dict[str, int] = {}
    first_event = kept[: kept.find(b"\n\n")]  # (a relay keeps the head: message_start is first)
    last_delta = kept[kept.rfind(b"message_delta") :]  # the text deltas between are not read
    for name, value in _COUNT.findall(first_event + last_delta):
        counts[name.decode()] = int(value)
    return _token_counts(counts)


def _is_message_stop(tail: bytes) -> bool:
    payload = last_json(tail)
    return isinstance(payload, dict) and payload.get("type") == "message_stop"


ANTHROPIC_SSE = RelayFormat(
    name="anthropic",
    ends_properly=_is_message_stop,
    read_usage=_anthropic_usage,
    usage_marker=b"_tokens",
    error_frame=lambda message, code: encode_event(
        orjson.dumps(wire.error_body(message, "api_error")), event="error"
    ),
    head_bytes=4096,  # message_start, with the input tokens
)


class AnthropicBackend(HttpBackend):
    protocol = "anthropic"

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        super().__init__(config, key)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers["anthropic-version"] = API_VERSION
        if key is not None:
            headers["x-api-key"] = key.reveal()
        self._headers = self.prepare(headers)
        self._stream_headers = self.prepare({**headers, "Accept": "text/event-stream"})

    def _translate(self, body: dict[str, Any], tier: TierConfig) -> dict[str, Any]:
        try:
            return wire.request_from_openai(body, model=tier.model)
        except ProtocolError as exc:
            raise BackendError(
                400,
                f"cannot send this request to an Anthropic backend: {exc}",
                code="untranslatable_request",
                type_="invalid_request_error",
            ) from exc

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        request = self._translate(body, tier)
        request.pop("stream", None)
        _raw, payload = await self.post_json(MESSAGES, orjson.dumps(request), self._headers)
        if not isinstance(payload, dict) or payload.get("type") != "message":
            raise self.bad_response("returned JSON that is not a message")
        answer = wire.response_to_openai(payload, model=tier.model)
        usage = answer.get("usage") or {}
        return Completion(orjson.dumps(answer), usage.get("prompt_tokens"), usage.get("completion_tokens"))

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        request = self._translate(body, tier)
        request["stream"] = True
        resp = await self.open_stream(MESSAGES, orjson.dumps(request), self._stream_headers)
        translator = wire.StreamToOpenAI(include_usage=wants_usage(body), model=tier.model)
        return TranslatedStream(self, resp, translator)

    async def forward(
        self, path: str, body: dict[str, Any], stream: bool, headers: Mapping[str, str] | None = None
    ) -> Completion | ChatStream:
        if path not in (MESSAGES, MESSAGES + "/count_tokens"):
            return await super().forward(path, body, stream, headers)
        extra = self.prepare(headers) if headers and self.config.pass_anthropic_beta else b""
        if stream:
            resp = await self.open_stream(path, orjson.dumps(body), self._stream_headers + extra)
            return RawRelay(self, resp, ANTHROPIC_SSE)
        raw, payload = await self.post_json(path, orjson.dumps(body), self._headers + extra)
        usage = payload.get("usage") if isinstance(payload, dict) else None
        return Completion(raw, *_token_counts(usage if isinstance(usage, dict) else {}))

    async def probe(self, timeout_s: float) -> ProbeResult:
        return await self.get_probe("/v1/models", timeout_s, self._headers)
