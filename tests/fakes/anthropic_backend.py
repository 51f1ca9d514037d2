"""A fake Anthropic Messages API.

Serves ``POST /v1/messages`` (JSON, or SSE when ``stream: true``), ``POST /v1/messages/count_tokens``
and ``GET /v1/models``. Every request must carry a key (``x-api-key`` or ``Authorization: Bearer``) and
an ``anthropic-version`` header, as the real API demands; both are recorded like any header.

The stream follows the documented event sequence::

    message_start            message with empty content, stop_reason null, input usage
    content_block_start      per block: thinking, text, tool_use (in that order)
    ping                     once, after the first block starts
    content_block_delta      thinking_delta... then signature_delta | text_delta... | input_json_delta...
    content_block_stop
    message_delta            stop_reason, stop_sequence, usage.output_tokens
    message_stop

and ``event: error`` (``{"type": "error", "error": {...}}``) when a :class:`StreamError` is scripted.
A thinking block appears when the request enables ``thinking`` or the reply scripts ``thinking``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from .base import (
    Call,
    FakeBackend,
    Output,
    Route,
    Wire,
    dumps,
    finish_reason,
    last_user_text,
    sse,
    usage_for,
)
from .script import LENGTH, STOP, TOOL_CALLS, Reply, Status, Usage, split_pieces, split_words

STOP_REASONS = {STOP: "end_turn", LENGTH: "max_tokens", TOOL_CALLS: "tool_use"}


class AnthropicDialect:
    """Anthropic's error envelope ``{"type": "error", "error": {"type", "message"}}``, and the same
    object as ``event: error`` mid-stream."""

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        return dumps(self._error(message, error_type))

    def stream_error_frame(self, message: str, error_type: str, wire: Wire) -> bytes:
        return sse(self._error(message, error_type), wire, event="error")

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    @staticmethod
    def _error(message: str, error_type: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type, "message": message}}


ANTHROPIC = AnthropicDialect()


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def stop_reason(reply: Reply) -> str:
    reason = finish_reason(reply)
    return STOP_REASONS.get(reason, reason)


def thinking_text(call: Call, reply: Reply) -> str | None:
    """The scripted thinking, else a default one when the request turned thinking on."""
    if reply.thinking is not None:
        return reply.thinking
    requested = call.body.get("thinking")
    if isinstance(requested, dict) and requested.get("type") in ("enabled", "adaptive"):
        return f"thinking about: {last_user_text(call.body)}"
    return None


def signature(call: Call) -> str:
    return f"sig-fake-{call.request.seq}"


def tool_use_id(call: Call, index: int, tool_id: str | None) -> str:
    return tool_id or f"toolu_fake_{call.request.seq}_{index}"


# --------------------------------------------------------------------------------------------------
# /v1/messages
# --------------------------------------------------------------------------------------------------


def messages(call: Call, reply: Reply) -> Output:
    if call.streaming:
        tail = [sse({"type": "message_stop"}, call.wire, event="message_stop")]
        return Output(
            _events(call, reply), "text/event-stream", streaming=True, tail=tail, headers=reply.headers
        )
    text = reply.resolved_text(call.echo)
    content: list[dict[str, Any]] = []
    if (thinking := thinking_text(call, reply)) is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": signature(call)})
    if text or not reply.tool_calls:
        content.append({"type": "text", "text": text})
    for i, tool in enumerate(reply.tool_calls):
        tool_id = tool_use_id(call, i, tool.id)
        content.append({"type": "tool_use", "id": tool_id, "name": tool.name, "input": dict(tool.arguments)})
    body = {
        **_message_head(call),
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": None,
        "usage": usage_json(usage_for(call, reply, text, thinking)),
    }
    return Output([dumps(body)], headers=reply.headers)


def _message_head(call: Call) -> dict[str, Any]:
    return {"id": call.ident("msg_"), "type": "message", "role": "assistant", "model": call.model}


def _events(call: Call, reply: Reply) -> Iterator[bytes]:
    wire = call.wire

    def event(name: str, data: dict[str, Any]) -> bytes:
        return sse({"type": name, **data}, wire, event=name)

    def delta(index: int, payload: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": index, "delta": payload})

    start_usage = usage_json(reply.usage or Usage(call.input_tokens, 1))
    head = {**_message_head(call), "content": [], "stop_reason": None, "stop_sequence": None}
    yield event("message_start", {"message": {**head, "usage": start_usage}})

    def open_block(index: int, block: dict[str, Any]) -> Iterator[bytes]:
        yield event("content_block_start", {"index": index, "content_block": block})
        if index == 0:  # the real API pings once, right after the first block opens
            yield event("ping", {})

    index = 0

    thinking = thinking_text(call, reply)
    if thinking is not None:
        yield from open_block(index, {"type": "thinking", "thinking": "", "signature": ""})
        for piece in split_words(thinking):
            yield delta(index, {"type": "thinking_delta", "thinking": piece})
        yield delta(index, {"type": "signature_delta", "signature": signature(call)})
        yield event("content_block_stop", {"index": index})
        index += 1

    streamed: list[str] = []
    chunks = iter(reply.resolved_chunks(call.echo))
    first = next(chunks, None)
    if first is not None or not reply.tool_calls:
        yield from open_block(index, {"type": "text", "text": ""})
        if first is not None:
            for piece in itertools.chain([first], chunks):
                streamed.append(piece)
                yield delta(index, {"type": "text_delta", "text": piece})
        yield event("content_block_stop", {"index": index})
        index += 1

    for i, tool in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": tool_use_id(call, i, tool.id), "name": tool.name, "input": {}}
        yield from open_block(index, block)
        for fragment in split_pieces(dumps(dict(tool.arguments)).decode()):
            yield delta(index, {"type": "input_json_delta", "partial_json": fragment})
        yield event("content_block_stop", {"index": index})
        index += 1

    usage = usage_for(call, reply, "".join(streamed), thinking)
    yield event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
            "usage": {"output_tokens": usage.output_tokens},
        },
    )


# --------------------------------------------------------------------------------------------------
# /v1/messages/count_tokens and /v1/models
# --------------------------------------------------------------------------------------------------


def message_tokens(call: Call, reply: Reply) -> Output:
    return Output([dumps({"input_tokens": call.input_tokens})])


def models(call: Call, reply: Reply) -> Output:
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in call.backend.models
    ]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return Output([dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})])


class AnthropicBackend(FakeBackend):
    """Fake Anthropic API; ``base_url`` is the root, as ``anthropic.Anthropic(base_url=...)`` expects.

    Requests without a key get 401 ``authentication_error``, without ``anthropic-version`` 400
    ``invalid_request_error``; with ``api_key`` set, the key must match.
    """

    kind = "anthropic"
    default_models = ("claude-sonnet-4-5", "claude-haiku-4-5")

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/messages", messages, ANTHROPIC),
            Route("POST", "/v1/messages/count_tokens", message_tokens, ANTHROPIC, model_call=False),
            Route("GET", "/v1/models", models, ANTHROPIC, model_call=False),
        ]

    def check_request(self, call: Call) -> Status | None:
        key = call.request.api_key
        if not key:
            return Status(401, message="x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return Status(401, message="invalid x-api-key")
        if not call.request.header("anthropic-version"):
            return Status(400, message="anthropic-version: header is required")
        return None
