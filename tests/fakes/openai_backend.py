"""A fake OpenAI-compatible upstream (OpenAI, OpenRouter, vLLM, llama.cpp... all speak this).

Serves ``POST /v1/chat/completions`` (JSON, or SSE when ``stream: true``), ``POST /v1/completions``,
``POST /v1/embeddings`` (float or base64) and ``GET /v1/models``.

The stream is the real framing: ``data: {chunk}\\n\\n`` events of ``chat.completion.chunk``; a role chunk
first; content deltas; tool calls as ``delta.tool_calls[i]`` pieces (id/type/name first, then argument
fragments); a chunk with ``finish_reason``; with ``stream_options.include_usage`` every chunk carries
``"usage": null`` and a last chunk has empty ``choices`` and the usage; then ``data: [DONE]``.

The routes are module-level (:func:`openai_routes`) so the Ollama fake mounts the very same handlers for
its OpenAI-compatible ``/v1`` API instead of re-implementing them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .base import (
    Call,
    FakeBackend,
    Output,
    Route,
    Wire,
    dumps,
    embedding,
    embedding_base64,
    finish_reason,
    sse,
    usage_for,
)
from .script import Reply, ToolCall, Usage, count_tokens, split_pieces, split_words


class OpenAIDialect:
    """OpenAI's error envelope ``{"error": {message, type, param, code}}``; mid-stream, the same object
    as an SSE ``data:`` event (what OpenAI-compatible servers send when generation fails)."""

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        return dumps(self._error(message, error_type))

    def stream_error_frame(self, message: str, error_type: str, wire: Wire) -> bytes:
        return sse(self._error(message, error_type), wire)

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    @staticmethod
    def _error(message: str, error_type: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


OPENAI = OpenAIDialect()
SSE = "text/event-stream"


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def tool_call_id(call: Call, index: int, tool: ToolCall) -> str:
    return tool.id or f"call_{call.request.seq}_{index}"


# --------------------------------------------------------------------------------------------------
# /v1/chat/completions
# --------------------------------------------------------------------------------------------------


def chat_completions(call: Call, reply: Reply) -> Output:
    if call.streaming:
        return Output(
            _chat_chunks(call, reply),
            SSE,
            streaming=True,
            tail=[sse("[DONE]", call.wire)],
            headers=reply.headers,
        )
    text = reply.resolved_text(call.echo)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not reply.tool_calls else None,
        "refusal": None,
    }
    if reply.thinking:
        message["reasoning_content"] = reply.thinking
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": tool_call_id(call, i, tool),
                "type": "function",
                "function": {"name": tool.name, "arguments": dumps(dict(tool.arguments)).decode()},
            }
            for i, tool in enumerate(reply.tool_calls)
        ]
    body = {
        "id": call.ident("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(reply)}
        ],
        "usage": usage_json(usage_for(call, reply, text, reply.thinking)),
        "system_fingerprint": "fp_fake",
    }
    return Output([dumps(body)], headers=reply.headers)


def _chat_chunks(call: Call, reply: Reply) -> Iterator[bytes]:
    include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    envelope = {
        "id": call.ident("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        event: dict[str, Any] = {**envelope, "choices": [choice]}
        if include_usage:
            event["usage"] = None
        return sse(event, call.wire)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in split_words(reply.thinking or ""):
        yield chunk({"reasoning_content": piece})
    streamed: list[str] = []
    for piece in reply.resolved_chunks(call.echo):
        streamed.append(piece)
        yield chunk({"content": piece})
    for i, tool in enumerate(reply.tool_calls):
        head = {"index": i, "id": tool_call_id(call, i, tool), "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": tool.name, "arguments": ""}}]})
        for fragment in split_pieces(dumps(dict(tool.arguments)).decode()):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
    yield chunk({}, finish_reason(reply))
    if include_usage:
        usage = usage_json(usage_for(call, reply, "".join(streamed), reply.thinking))
        yield sse({**envelope, "choices": [], "usage": usage}, call.wire)


# --------------------------------------------------------------------------------------------------
# /v1/completions (legacy text completions)
# --------------------------------------------------------------------------------------------------


def completions(call: Call, reply: Reply) -> Output:
    envelope = {
        "id": call.ident("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.model,
    }
    if not call.streaming:
        text = reply.resolved_text(call.echo)
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason(reply)}
        usage = usage_json(usage_for(call, reply, text, reply.thinking))
        return Output([dumps({**envelope, "choices": [choice], "usage": usage})], headers=reply.headers)

    def events() -> Iterator[bytes]:
        for piece in reply.resolved_chunks(call.echo):
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
            yield sse({**envelope, "choices": [choice]}, call.wire)
        final = {"text": "", "index": 0, "logprobs": None, "finish_reason": finish_reason(reply)}
        yield sse({**envelope, "choices": [final]}, call.wire)

    return Output(events(), SSE, streaming=True, tail=[sse("[DONE]", call.wire)], headers=reply.headers)


# --------------------------------------------------------------------------------------------------
# /v1/embeddings and /v1/models
# --------------------------------------------------------------------------------------------------


def embeddings(call: Call, reply: Reply) -> Output:
    raw = call.body.get("input", "")
    inputs: Sequence[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = embedding(item if isinstance(item, str) else dumps(item).decode())
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": embedding_base64(vector) if as_base64 else vector,
            }
        )
    tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
    body = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Output([dumps(body)], headers=reply.headers)


def models(call: Call, reply: Reply) -> Output:
    data = [
        {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": call.backend.name}
        for m in call.backend.models
    ]
    return Output([dumps({"object": "list", "data": data})])


def openai_routes() -> list[Route]:
    """The OpenAI-compatible API, mountable on any fake (the Ollama fake mounts it too)."""
    return [
        Route("POST", "/v1/chat/completions", chat_completions, OPENAI),
        Route("POST", "/v1/completions", completions, OPENAI),
        Route("POST", "/v1/embeddings", embeddings, OPENAI),
        Route("GET", "/v1/models", models, OPENAI, model_call=False),
    ]


class OpenAIBackend(FakeBackend):
    """Fake OpenAI API. ``base_url`` (``.../v1``) is what ``openai.OpenAI(base_url=...)`` expects.
    With ``api_key`` set, requests must send ``Authorization: Bearer <api_key>``."""

    kind = "openai"
    default_models = ("gpt-4o-mini", "gpt-4o")

    def routes(self) -> list[Route]:
        return openai_routes()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"
