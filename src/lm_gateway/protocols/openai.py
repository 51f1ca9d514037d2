"""The internal format (OpenAI chat completions) and the helpers every translator shares.

The other protocol modules build their OpenAI-side values only through these helpers, so the shape of
a chunk, a whole completion, an assistant message, usage and errors is defined once.

Reading OpenAI-compatible data we are lenient where real servers differ: reasoning text arrives as
``reasoning_content`` (DeepSeek, llama.cpp) or ``reasoning`` (vLLM, OpenRouter, Ollama's compat
endpoint); ``[DONE]`` and even ``finish_reason`` are sometimes missing; errors arrive as ``{"error":
{...}}`` or ``{"error": "text"}``. Writing, we always produce the canonical form (``reasoning_content``).

Only the first choice matters to the other protocols (Anthropic and Ollama have no ``n``); the
accumulator and :func:`chunks_from_completion` still keep choices apart by ``index``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any

import orjson

from . import ProtocolError, UpstreamStreamError
from .shapes import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    STRING_OR_STRINGS,
    Arr,
    Either,
    Obj,
    messages_of,
    text_or,
)
from .sse import SSEEvent, encode_event

__all__ = [
    "CHAT_REQUEST",
    "CONTENT",
    "DONE",
    "TOOLS",
    "ChunkFrames",
    "ChunkMaker",
    "DeltaParts",
    "StreamAccumulator",
    "StreamUsage",
    "ToolCallBuffer",
    "as_count",
    "assistant_message",
    "cached_tokens_of",
    "chunks_from_completion",
    "completion",
    "completion_chunk",
    "content_text",
    "delta_parts",
    "dump_json",
    "encode_chunk",
    "encode_chunks",
    "error_payload",
    "error_type_for_status",
    "first_choice",
    "make_usage",
    "max_tokens_of",
    "new_id",
    "now",
    "parse_arguments",
    "parse_data_url",
    "parse_stream_data",
    "parse_stream_event",
    "plain_content",
    "raise_for_error",
    "read_frame",
    "reasoning_of",
    "stop_list",
    "tool_call",
    "tool_call_fragment",
    "tool_call_header",
    "usage_of",
]

JSON = dict[str, Any]

DONE = b"data: [DONE]\n\n"
"""The OpenAI end-of-stream marker, already framed."""


def new_id(prefix: str) -> str:
    """A fresh random id (``prefix`` + 24 hex digits): unique per call, so ids never repeat across turns.

    From :mod:`random` (seeded from the OS, and again in a forked child), not :func:`uuid.uuid4`: an
    id needs to be unique, not secret, and a system call per translated response costs more than all
    the rest of making its id."""
    return f"{prefix}{getrandbits(96):024x}"


def now() -> int:
    """Unix seconds, for ``created``: translators stamp the time they produce a response."""
    return int(time.time())


def dump_json(obj: Any) -> str:
    """Compact JSON text, used for tool-call arguments (OpenAI carries them as a JSON string)."""
    return orjson.dumps(obj).decode()


def parse_arguments(arguments: Any) -> JSON:
    """Tool-call arguments as an object, for protocols that carry objects (Anthropic, Ollama).

    A JSON string is parsed; an object is used as is. Anything that does not give an object (invalid
    JSON, a list, a number, a missing value) becomes ``{}``: the target protocols reject a non-object
    input, and a model's malformed arguments should not fail the whole conversation.
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if isinstance(arguments, str | bytes) and arguments.strip():
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media>;base64,<data>`` → ``(media, data)``; None for anything else (http URLs included)."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    media = header[5:].split(";", 1)[0]
    return media or "application/octet-stream", data


def last_user_text(messages: Any) -> str:
    """The text of the last user message (text parts joined by a space), or ``""``."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part["text"]
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
            return ""
    return ""


def content_text(content: Any, sep: str = "\n") -> str:
    """The text of a message ``content``: the string itself, or its ``text`` parts joined by ``sep``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def reasoning_of(obj: Mapping[str, Any]) -> str:
    """Reasoning text of a message or delta, under either name servers use for it."""
    value = obj.get("reasoning_content")
    if not isinstance(value, str) or not value:
        value = obj.get("reasoning")
    return value if isinstance(value, str) else ""


def stop_list(stop: Any) -> list[str] | None:
    """``stop`` as a list: OpenAI accepts a string or a list, the other protocols only a list."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)]
    return None


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    """The output-token cap: ``max_completion_tokens`` (current name) wins over ``max_tokens``."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for_status(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status, when the upstream gave none."""
    return _STATUS_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


# --- usage -------------------------------------------------------------------------------------------


def as_count(value: Any) -> int | None:
    """An integer token count, or None (bools and other types are not counts)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(obj: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(prompt tokens, completion tokens) of a completion or chunk; None where not reported.

    (Objects read from JSON are ``dict``s: an ``isinstance`` check against ``dict`` is a type
    comparison, against the ``Mapping`` ABC a few microseconds when its caches are cold.)"""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None, None
    return as_count(usage.get("prompt_tokens")), as_count(usage.get("completion_tokens"))


def cached_tokens_of(obj: Mapping[str, Any]) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens``, when reported."""
    usage = obj.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return as_count(details.get("cached_tokens")) if isinstance(details, dict) else None


def make_usage(prompt: int | None, completion: int | None, cached: int | None = None) -> JSON:
    """An OpenAI ``usage`` object; ``cached`` adds ``prompt_tokens_details.cached_tokens``."""
    usage: JSON = {
        "prompt_tokens": prompt or 0,
        "completion_tokens": completion or 0,
        "total_tokens": (prompt or 0) + (completion or 0),
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


# --- building responses ------------------------------------------------------------------------------


def assistant_message(content: str, reasoning: str = "", tool_calls: list[JSON] | None = None) -> JSON:
    """The ``message`` of a whole completion: content is null only when tool calls stand in for it."""
    message: JSON = {"role": "assistant", "content": content if content or not tool_calls else None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def tool_call(id: str, name: str, arguments: str) -> JSON:
    """A whole OpenAI tool call (``arguments`` is a JSON string)."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    *, id: str, model: str, created: int, message: JSON, finish_reason: str, usage: JSON | None = None
) -> JSON:
    """A whole ``chat.completion`` with one choice."""
    return _whole(id, model, created, [_choice(0, message, finish_reason)], usage)


def _choice(index: int, message: JSON, finish_reason: str) -> JSON:
    return {"index": index, "message": message, "finish_reason": finish_reason}


def _whole(id: str, model: str, created: int, choices: list[JSON], usage: JSON | None) -> JSON:
    resp: JSON = {"id": id, "object": "chat.completion", "created": created, "model": model}
    resp["choices"] = choices
    if usage is not None:
        resp["usage"] = usage
    return resp


def completion_chunk(
    *,
    id: str,
    model: str,
    created: int,
    delta: JSON | None = None,
    finish_reason: str | None = None,
    usage: JSON | None = None,
    choices_empty: bool = False,
    index: int = 0,
) -> JSON:
    """One ``chat.completion.chunk``. ``choices_empty`` gives the final usage-only chunk."""
    chunk: JSON = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
    if choices_empty:
        chunk["choices"] = []
    else:
        chunk["choices"] = [{"index": index, "delta": delta or {}, "finish_reason": finish_reason}]
    if usage is not None:
        chunk["usage"] = usage
    return chunk


@dataclass(frozen=True, slots=True)
class ChunkMaker:
    """Chunks of one stream: they all share the stream's ``id``, ``model`` and ``created``."""

    id: str
    model: str
    created: int

    def delta(self, delta: JSON, index: int = 0) -> JSON:
        return completion_chunk(id=self.id, model=self.model, created=self.created, delta=delta, index=index)

    def finish(self, finish_reason: str, index: int = 0) -> JSON:
        return completion_chunk(
            id=self.id, model=self.model, created=self.created, finish_reason=finish_reason, index=index
        )

    def usage(self, usage: JSON) -> JSON:
        return completion_chunk(
            id=self.id, model=self.model, created=self.created, usage=usage, choices_empty=True
        )


class ChunkFrames:
    """The chunks of one stream as SSE frames, built from the stream's constant head.

    Each method gives byte for byte ``encode_chunks(chunks)`` for the chunks :class:`ChunkMaker`'s
    method of the same name makes (:meth:`contents`: ``delta({"content": text})`` for each text,
    the texts given already serialised): building a dict per chunk only to serialise its unchanging
    id, model and created again is most of what encoding a chunk costs, and content deltas are
    nearly every chunk of a stream.
    """

    __slots__ = ("_between", "_head", "_open")

    def __init__(self, id: str, model: str, created: int) -> None:
        head = orjson.dumps({"id": id, "object": "chat.completion.chunk", "created": created, "model": model})
        self._head = b"data: " + head[:-1] + b',"choices":['
        # contents() joins str (one encode per run of texts, not one per text)
        self._open = (self._head + b'{"index":0,"delta":{"content":"').decode()
        self._between = _CONTENT_CLOSE + self._open

    def delta(self, delta: JSON) -> bytes:
        return self._head + b'{"index":0,"delta":' + orjson.dumps(delta) + b',"finish_reason":null}]}\n\n'

    def first(self) -> bytes:
        """``delta({"role": "assistant", "content": ""})``: the chunk every stream starts with."""
        return self._head + _FIRST_DELTA

    def contents(self, texts: list[str]) -> bytes:
        """``delta({"content": text})`` for each text, each given as what orjson writes between the
        quotes of its JSON string. ``texts`` (non-empty) is used up: the frame's start and end are
        joined to its first and last text rather than to the whole run, one copy of the run instead
        of three."""
        texts[0] = self._open + texts[0]
        texts[-1] += _CONTENT_CLOSE
        return self._between.join(texts).encode()

    def finish(self, finish_reason: str) -> bytes:
        return self._head + (_FINISH_ENDS.get(finish_reason) or _finish_end(finish_reason))

    def usage(self, usage: JSON) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


_CONTENT_CLOSE = '"},"finish_reason":null}]}\n\n'
_FIRST_DELTA = b'{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'


def _finish_end(finish_reason: str) -> bytes:
    return b'{"index":0,"delta":{},"finish_reason":' + orjson.dumps(finish_reason) + b"}]}\n\n"


_FINISH_ENDS = {reason: _finish_end(reason) for reason in ("stop", "length", "tool_calls", "content_filter")}
"""What follows a stream's head in its last chunk, made once for each reason a translator gives."""


def read_frame(frame: bytes) -> JSON:
    """The chunk an SSE frame (``data: <json>``, one line) carries."""
    chunk: JSON = orjson.loads(frame[6:])
    return chunk


def tool_call_header(index: int, id: str, name: str) -> JSON:
    """The first stream piece of a tool call (id, type, name, empty arguments), as the SDKs expect."""
    return {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}


def tool_call_fragment(index: int, arguments: str) -> JSON:
    """A later stream piece of a tool call: only an arguments fragment."""
    return {"index": index, "function": {"arguments": arguments}}


def error_payload(message: str, type: str, code: str | int | None, param: Any = None) -> JSON:
    """The OpenAI error body ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- reading streams ---------------------------------------------------------------------------------


def raise_for_error(obj: Mapping[str, Any]) -> None:
    """Raise :class:`UpstreamStreamError` if ``obj`` is an in-band error (``{"error": {...} | "text"}``)."""
    error = obj.get("error")
    if not error:
        return
    if isinstance(error, Mapping):
        message = error.get("message")
        kind = error.get("type")
        raise UpstreamStreamError(
            message if isinstance(message, str) else dump_json(dict(error)),
            kind if isinstance(kind, str) and kind else "api_error",
        )
    raise UpstreamStreamError(str(error))


def parse_stream_event(event: SSEEvent) -> JSON | None:
    """An OpenAI SSE event → chunk dict; None for ``[DONE]``. Raises on invalid JSON or an error chunk."""
    return parse_stream_data(event.data)


def parse_stream_data(data: str) -> JSON | None:
    """:func:`parse_stream_event` of an event's ``data`` alone."""
    data = data.strip()
    if data == "[DONE]":
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON in OpenAI stream: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise ProtocolError("OpenAI stream chunk is not an object")
    raise_for_error(chunk)
    return chunk


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    """A chunk framed as one SSE event."""
    return encode_event(orjson.dumps(chunk))


def encode_chunks(chunks: list[JSON]) -> bytes:
    """Chunks framed as SSE events, in one piece (JSON text holds no line break to split)."""
    if not chunks:  # most events of a stream that are not text give no chunk
        return b""
    return b"".join([b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks])


def plain_content(chunk: Mapping[str, Any]) -> str | None:
    """The text of a chunk that is nothing but a non-empty content delta, else None.

    Such chunks are the bulk of every stream, so the stream translators frame them from a template
    (the common case only: no error, usage, reasoning, tool call, finish reason or unusual type);
    every other chunk goes the general way, which gives the same result for these.
    """
    choices = chunk.get("choices")
    if chunk.get("error") or chunk.get("usage") is not None or type(choices) is not list or not choices:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason"):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or delta.get("reasoning_content") or delta.get("reasoning"):
        return None
    content = delta.get("content")
    if type(content) is not str or not content or delta.get("tool_calls") is not None:
        return None
    return content


def first_choice(obj: Mapping[str, Any]) -> JSON:
    """``choices[0]``, or ``{}`` (usage-only chunks have no choices)."""
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


@dataclass(frozen=True, slots=True)
class DeltaParts:
    """What one streamed choice carries, read leniently once for every stream consumer."""

    reasoning: str
    content: str
    tool_calls: list[Any]
    finish_reason: str | None


def delta_parts(choice: Mapping[str, Any]) -> DeltaParts:
    """The parts of a chunk's choice (``reasoning``/``reasoning_content``, content, tool-call pieces)."""
    delta = choice.get("delta") or {}
    content = delta.get("content")
    tool_calls = delta.get("tool_calls")
    finish_reason = choice.get("finish_reason")
    return DeltaParts(
        reasoning_of(delta),
        content if isinstance(content, str) else "",
        tool_calls if isinstance(tool_calls, list) else [],
        finish_reason if isinstance(finish_reason, str) and finish_reason else None,
    )


@dataclass(slots=True)
class StreamUsage:
    """The last usage a stream reported (servers send it once, in the final chunk)."""

    prompt: int | None = None
    completion: int | None = None
    cached: int | None = None

    def record(self, chunk: Mapping[str, Any]) -> None:
        prompt, completion_tokens = usage_of(chunk)
        if prompt is not None or completion_tokens is not None:
            self.prompt, self.completion, self.cached = prompt, completion_tokens, cached_tokens_of(chunk)


@dataclass(slots=True)
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallBuffer:
    """Merges streamed tool-call pieces by ``index``, into whole OpenAI tool calls.

    The first piece carries ``id`` and ``function.name``, later ones argument fragments, which are
    concatenated. A name is taken once: a server that repeats it in every piece must not double it.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, _ToolCall] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, pieces: Iterable[Any]) -> None:
        for piece in pieces:
            if not isinstance(piece, dict):
                continue
            index = piece.get("index")
            call = self._calls.setdefault(index if isinstance(index, int) else len(self._calls), _ToolCall())
            if isinstance(piece.get("id"), str) and piece["id"] and not call.id:
                call.id = piece["id"]
            function = piece.get("function") or {}
            name = function.get("name")
            if isinstance(name, str) and name and not call.name:
                call.name = name
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call.arguments.append(arguments)
            elif isinstance(arguments, dict):  # some servers send the whole object at once
                call.arguments.append(dump_json(arguments))

    def calls(self) -> list[JSON]:
        """Whole tool calls in index order; a missing id is generated (``call_`` + hex)."""
        return [
            tool_call(call.id or new_id("call_"), call.name, "".join(call.arguments))
            for _, call in sorted(self._calls.items())
        ]


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tools: ToolCallBuffer = field(default_factory=ToolCallBuffer)
    finish_reason: str | None = None

    def message(self) -> JSON:
        calls = self.tools.calls() if self.tools else None
        return assistant_message("".join(self.content), "".join(self.reasoning), calls)


class StreamAccumulator:
    """Builds the whole ``chat.completion`` a stream of chunks amounts to.

    A stream that never reported a ``finish_reason`` is taken to have stopped normally (``"stop"``):
    the caller only asks for the result once the stream ended cleanly.
    """

    __slots__ = ("_choices", "_created", "_id", "_model", "_usage")

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._id: str | None = None
        self._model: str | None = None
        self._created: int | None = None
        self._usage: JSON | None = None

    def add(self, chunk: JSON) -> None:
        raise_for_error(chunk)
        self._id = self._id or _str(chunk.get("id"))
        self._model = self._model or _str(chunk.get("model"))
        self._created = self._created or as_count(chunk.get("created"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            state = self._choices.setdefault(index if isinstance(index, int) else 0, _Choice())
            parts = delta_parts(choice)
            state.content.append(parts.content)
            state.reasoning.append(parts.reasoning)
            state.tools.add(parts.tool_calls)
            state.finish_reason = parts.finish_reason or state.finish_reason

    def result(self) -> JSON:
        states = sorted((self._choices or {0: _Choice()}).items())
        choices = [_choice(index, state.message(), state.finish_reason or "stop") for index, state in states]
        return _whole(
            self._id or new_id("chatcmpl-"), self._model or "", self._created or now(), choices, self._usage
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def chunks_from_completion(resp: JSON, include_usage: bool) -> list[JSON]:
    """A whole completion replayed as a stream, in the order a real server sends the pieces.

    Per choice: the role chunk, reasoning, content, each tool call as a header piece then one arguments
    piece, the finish chunk; then, with ``include_usage``, the usage chunk with empty ``choices``.
    """
    make = ChunkMaker(
        _str(resp.get("id")) or new_id("chatcmpl-"),
        _str(resp.get("model")) or "",
        as_count(resp.get("created")) or now(),
    )
    chunks: list[JSON] = []
    for choice in resp.get("choices") or ():
        index = choice.get("index", 0)
        chunks.extend(make.delta(delta, index) for delta in _message_deltas(choice.get("message") or {}))
        chunks.append(make.finish(choice.get("finish_reason") or "stop", index))
    if include_usage and isinstance(resp.get("usage"), dict):
        chunks.append(make.usage(resp["usage"]))
    return chunks


def _message_deltas(message: Mapping[str, Any]) -> list[JSON]:
    deltas: list[JSON] = [{"role": "assistant", "content": ""}]
    if reasoning := reasoning_of(message):
        deltas.append({"reasoning_content": reasoning})
    if isinstance(content := message.get("content"), str) and content:
        deltas.append({"content": content})
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        header = tool_call_header(index, call.get("id") or new_id("call_"), function.get("name", ""))
        deltas.append({"tool_calls": [header]})
        if arguments := function.get("arguments"):
            deltas.append({"tool_calls": [tool_call_fragment(index, arguments)]})
    return deltas


# --- the request's shape -----------------------------------------------------------------------------

_TOOL_FUNCTION = Obj(
    {"name": STRING, "description": STRING, "parameters": OBJECT},
    required=("name",),
    what="an object with a string 'name'",
)
_CALLED_FUNCTION = Obj({"name": STRING, "arguments": Either((STRING, OBJECT), "a JSON string")})
_CONTENT_PART = Obj(
    {
        "type": STRING,
        "text": STRING,
        "image_url": Either((STRING, Obj({"url": STRING})), "a URL or an object with a string 'url'"),
        "file": OBJECT,
    },
    required=("type",),
    what="an object with a string 'type'",
)
CONTENT = text_or(_CONTENT_PART, "content parts")
_MESSAGES = messages_of(
    {
        "content": CONTENT,
        "tool_calls": Arr(
            Obj(
                {"id": STRING, "function": _CALLED_FUNCTION},
                ("function",),
                "an object with a 'function' object",
            ),
            "an array of tool calls",
        ),
        "tool_call_id": STRING,
        "name": STRING,
    }
)
TOOLS = Arr(Obj({"type": STRING, "function": _TOOL_FUNCTION}), "an array of tools")
CHAT_REQUEST = Obj(
    {
        "model": STRING,
        "messages": _MESSAGES,
        "tools": TOOLS,
        "tool_choice": Either(
            (STRING, Obj({"type": STRING, "function": Obj({"name": STRING})})), "a string or an object"
        ),
        "stop": STRING_OR_STRINGS,
        "response_format": Obj({"type": STRING, "json_schema": Obj({"name": STRING, "schema": OBJECT})}),
        "max_tokens": INTEGER,
        "max_completion_tokens": INTEGER,
        "temperature": NUMBER,
        "top_p": NUMBER,
        "stream": BOOLEAN,
        "stream_options": Obj({"include_usage": BOOLEAN}),
        "user": STRING,
        "reasoning_effort": STRING,
        "parallel_tool_calls": BOOLEAN,
    }
)
"""A chat-completions request as the translators read it (:mod:`.shapes`): what a client is told to
fix when one of them could not read its request."""
