"""A fake Ollama server: the native API plus its OpenAI-compatible ``/v1`` API.

Native endpoints: ``POST /api/chat`` and ``POST /api/generate`` stream NDJSON *unless* the request says
``"stream": false`` (Ollama's default is streaming, unlike OpenAI's); ``POST /api/embed``,
``GET /api/tags``, ``GET /api/version``, ``POST /api/show`` and ``GET /`` ("Ollama is running").

Shapes follow Ollama's API docs: each streamed line is a JSON object with ``done: false`` and a piece of
``message.content`` (``response`` for generate); the last line has ``done: true``, ``done_reason``, an
empty content and the timing/count statistics (``total_duration``, ``load_duration``,
``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count``, ``eval_duration``, nanoseconds).
Tool calls are native objects (``function.arguments`` is an object, not a JSON string). With ``think``
in the request, reasoning comes in ``message.thinking`` (``thinking`` for generate). Errors are
``{"error": "..."}``, as a body or as a line mid-stream.

``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` and ``/v1/models`` are the OpenAI fake's
own routes, mounted here, so the compat API behaves exactly like the OpenAI fake (OpenAI error shapes
included).
"""

from __future__ import annotations

import hashlib
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
    finish_reason,
    last_user_text,
    ndjson,
    now_iso,
    usage_for,
)
from .openai_backend import openai_routes
from .script import LENGTH, Reply, Usage, count_tokens, split_words

NDJSON = "application/x-ndjson"


class OllamaDialect:
    """Ollama's errors: ``{"error": "message"}`` as the body, or as one NDJSON line mid-stream."""

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        return dumps({"error": message})

    def stream_error_frame(self, message: str, error_type: str, wire: Wire) -> bytes:
        return ndjson({"error": message}, wire)

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is not False


OLLAMA = OllamaDialect()


def done_reason(reply: Reply) -> str:
    """Ollama only distinguishes ``length`` from ``stop`` (tool calls end with ``stop`` too)."""
    return "length" if finish_reason(reply) == LENGTH else "stop"


def stats(usage: Usage) -> dict[str, int]:
    """The final line's statistics; durations are fixed, deterministic nanosecond values."""
    return {
        "total_duration": 250_000_000,
        "load_duration": 10_000_000,
        "prompt_eval_count": usage.input_tokens,
        "prompt_eval_duration": 40_000_000,
        "eval_count": usage.output_tokens,
        "eval_duration": 200_000_000,
    }


def thinking_text(call: Call, reply: Reply) -> str | None:
    """The scripted thinking, else a default one when the request asks with ``think``."""
    if reply.thinking is not None:
        return reply.thinking
    think = call.body.get("think")
    if think and think != "none":
        return f"thinking about: {last_user_text(call.body)}"
    return None


def native_tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"function": {"index": i, "name": tool.name, "arguments": dict(tool.arguments)}}
        for i, tool in enumerate(reply.tool_calls)
    ]


def _generation(call: Call, reply: Reply, *, chat: bool) -> Output:
    """``/api/chat`` and ``/api/generate`` differ only in where text goes: ``message.content`` and
    ``message.thinking`` for chat, top-level ``response`` and ``thinking`` for generate."""
    head = {"model": call.model, "created_at": now_iso()}
    thinking = thinking_text(call, reply)

    def piece(content: str, **extra: Any) -> dict[str, Any]:
        if chat:
            return {"message": {"role": "assistant", "content": content, **extra}}
        return {"response": content, **extra}

    def final(usage: Usage, content: str, **extra: Any) -> dict[str, Any]:
        tail = {} if chat else {"context": [1, 2, 3]}
        done = {"done": True, "done_reason": done_reason(reply), **tail, **stats(usage)}
        return {**head, **piece(content, **extra), **done}

    if not call.streaming:
        text = reply.resolved_text(call.echo)
        extra: dict[str, Any] = {}
        if thinking is not None:
            extra["thinking"] = thinking
        if chat and reply.tool_calls:
            extra["tool_calls"] = native_tool_calls(reply)
        body = final(usage_for(call, reply, text, thinking), text, **extra)
        return Output([dumps(body)], "application/json; charset=utf-8", headers=reply.headers)

    streamed: list[str] = []

    def lines() -> Iterator[bytes]:
        for part in split_words(thinking or ""):
            yield ndjson({**head, **piece("", thinking=part), "done": False}, call.wire)
        for part in reply.resolved_chunks(call.echo):
            streamed.append(part)
            yield ndjson({**head, **piece(part), "done": False}, call.wire)
        if chat and reply.tool_calls:
            tools = piece("", tool_calls=native_tool_calls(reply))
            yield ndjson({**head, **tools, "done": False}, call.wire)

    def last_line() -> Iterator[bytes]:  # a generator: counts what was actually streamed
        yield ndjson(final(usage_for(call, reply, "".join(streamed), thinking), ""), call.wire)

    return Output(lines(), NDJSON, streaming=True, tail=last_line(), headers=reply.headers)


def chat(call: Call, reply: Reply) -> Output:
    return _generation(call, reply, chat=True)


def generate(call: Call, reply: Reply) -> Output:
    return _generation(call, reply, chat=False)


def embed(call: Call, reply: Reply) -> Output:
    raw = call.body.get("input", "")
    inputs: Sequence[str] = [str(i) for i in raw] if isinstance(raw, list) else [str(raw)]
    body = {
        "model": call.model,
        "embeddings": [embedding(text) for text in inputs],
        "total_duration": 14_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": sum(count_tokens(text) for text in inputs),
    }
    return Output([dumps(body)], headers=reply.headers)


# --------------------------------------------------------------------------------------------------
# Model metadata
# --------------------------------------------------------------------------------------------------

DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_K_M",
}


def tags(call: Call, reply: Reply) -> Output:
    entries = [
        {
            "name": m,
            "model": m,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 4_920_753_328,
            "digest": hashlib.sha256(m.encode()).hexdigest(),
            "details": DETAILS,
        }
        for m in call.backend.models
    ]
    return Output([dumps({"models": entries})])


def version(call: Call, reply: Reply) -> Output:
    backend = call.backend
    assert isinstance(backend, OllamaBackend)
    return Output([dumps({"version": backend.version})])


def show(call: Call, reply: Reply) -> Output:
    backend = call.backend
    assert isinstance(backend, OllamaBackend)
    body = {
        "modelfile": f"FROM {call.model}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": DETAILS,
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 8_030_261_248,
            "llama.context_length": backend.context_length,
        },
        "capabilities": list(backend.capabilities),
        "modified_at": "2025-01-01T00:00:00Z",
    }
    return Output([dumps(body)])


def root(call: Call, reply: Reply) -> Output:
    return Output([b"Ollama is running"], "text/plain")


class OllamaBackend(FakeBackend):
    """Fake Ollama. ``base_url`` is the root; the OpenAI-compatible API is under ``/v1``.

    Extra constructor arguments: ``version`` (``/api/version``), ``context_length`` and
    ``capabilities`` (``/api/show``). No key is required unless ``api_key`` is set.
    """

    kind = "ollama"
    default_models = ("llama3.2:latest", "qwen3:8b")

    def __init__(
        self,
        *,
        version: str = "0.6.2",
        context_length: int = 8192,
        capabilities: Sequence[str] = ("completion", "tools", "thinking"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.context_length = context_length
        self.capabilities = tuple(capabilities)

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/api/chat", chat, OLLAMA),
            Route("POST", "/api/generate", generate, OLLAMA),
            Route("POST", "/api/embed", embed, OLLAMA),
            Route("GET", "/api/tags", tags, OLLAMA, model_call=False),
            Route("GET", "/api/version", version, OLLAMA, model_call=False),
            Route("POST", "/api/show", show, OLLAMA, model_call=False),
            Route("GET", "/", root, OLLAMA, model_call=False),
            *openai_routes(),
        ]
