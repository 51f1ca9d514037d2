"""Anthropic Messages ⇄ internal (OpenAI) format, in both directions.

Backend direction (the gateway calls an Anthropic upstream): :func:`request_from_openai`,
:func:`response_to_openai`, :class:`StreamToOpenAI`. Client direction (an Anthropic client, such as
Claude Code, calls the gateway): :func:`request_to_openai`, :func:`response_from_openai`,
:class:`StreamFromOpenAI`, :func:`error_body`, :func:`count_tokens_estimate`.

Decisions where the formats do not line up (each is a deliberate, documented choice):

- System text: OpenAI ``system``/``developer`` messages anywhere in the list become the top-level
  ``system``: a string (joined by blank lines) when all were strings, a list of text blocks when any
  used array content, so no part is dropped. Inbound, an Anthropic system block list becomes one
  string (joined by blank lines): every OpenAI-compatible server accepts a string.
- Anthropic requires alternating roles: consecutive same-role messages are merged into one turn, and
  OpenAI ``tool`` messages become ``tool_result`` blocks at the front of a user turn.
- Unparseable tool-call arguments become ``{}`` (see :func:`.openai.parse_arguments`).
- ``max_tokens`` is required by Anthropic: ``max_completion_tokens``, else ``max_tokens``, else the
  caller's default (4096).
- ``response_format`` (json_object / json_schema) has no portable Anthropic equivalent across models,
  so it becomes an instruction appended to the system prompt.
- Reasoning: ``reasoning_effort`` (or the gateway's ``think`` flag) turns on extended thinking with a
  budget per level (:data:`EFFORT_BUDGET`), kept below ``max_tokens``; thinking forbids sampling
  overrides, so ``temperature``/``top_p``/``top_k`` are then dropped. Inbound, a thinking budget maps
  back to a ``reasoning_effort`` level. Thinking signatures have no OpenAI field and are dropped.
- Usage: OpenAI ``prompt_tokens`` = ``input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens`` (Anthropic counts them apart), ``cached_tokens`` = cache reads.
- A reply with tool calls always gets ``stop_reason: tool_use`` (clients run tools on that value),
  even if the upstream said ``stop``.
- Anthropic server tools (web search, code execution…) cannot run elsewhere: :class:`ProtocolError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import ProtocolError, UpstreamStreamError
from .openai import (
    ChunkFrames,
    StreamUsage,
    assistant_message,
    cached_tokens_of,
    completion,
    content_text,
    delta_parts,
    dump_json,
    error_payload,
    first_choice,
    make_usage,
    max_tokens_of,
    new_id,
    now,
    parse_arguments,
    parse_data_url,
    parse_stream_data,
    parse_stream_event,
    plain_content,
    raise_for_error,
    read_frame,
    reasoning_of,
    stop_list,
    tool_call,
    tool_call_fragment,
    tool_call_header,
    usage_of,
)
from .openai import (
    error_type_for_status as openai_error_type,
)
from .shapes import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    STRINGS,
    Arr,
    Obj,
    Shape,
    messages_of,
    text_or,
)
from .sse import SSEDecoder, SSEEvent, encode_event, text_run

__all__ = [
    "EFFORT_BUDGET",
    "StreamFromOpenAI",
    "StreamToOpenAI",
    "count_tokens_estimate",
    "encode_events",
    "error_body",
    "error_from_openai",
    "error_to_openai",
    "error_type_for_status",
    "request_from_openai",
    "request_to_openai",
    "response_from_openai",
    "response_to_openai",
]

JSON = dict[str, Any]
Event = tuple[str, JSON]

EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
"""Thinking ``budget_tokens`` per OpenAI ``reasoning_effort`` level (Anthropic's minimum is 1024)."""

_MIN_BUDGET = 1024

_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)
_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
_JSON_SCHEMA_INSTRUCTION = (
    "Respond with a single JSON value that conforms to this JSON Schema, and nothing else:\n"
)


# ====================================================================================================
# Backend direction: internal (OpenAI) request → Anthropic upstream, and its answers back.
# ====================================================================================================


def request_from_openai(body: JSON, *, model: str, default_max_tokens: int = 4096) -> JSON:
    """An internal chat-completions request as an Anthropic Messages request for ``model``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ProtocolError("`messages` must be an array")
    max_tokens = max_tokens_of(body) or default_max_tokens
    out: JSON = {"model": model, "max_tokens": max_tokens}
    if system := _system_from_openai(messages, body.get("response_format")):
        out["system"] = system
    out["messages"] = _turns_from_openai(messages)
    if not body.keys() <= _PLAIN_REQUEST:  # a plain chat turn has no option to look for
        _options_from_openai(body, max_tokens, out)
    if isinstance(body.get("stream"), bool):
        out["stream"] = body["stream"]
    return out


_PLAIN_REQUEST = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"}
)
"""Request fields :func:`request_from_openai` reads before :func:`_options_from_openai` (or never)."""


def _options_from_openai(body: JSON, max_tokens: int, out: JSON) -> None:
    """Sampling or extended thinking, stop sequences, the user and tools, into ``out``."""
    thinking = _thinking_from_openai(body, max_tokens)
    if thinking is None:
        for key in _SAMPLING:
            if (value := body.get(key)) is not None:
                out[key] = value
    else:
        out["thinking"] = thinking
    if stop := stop_list(body.get("stop")):
        out["stop_sequences"] = stop
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if tools := body.get("tools"):
        out["tools"] = [_tool_from_openai(tool) for tool in tools]
        if choice := _tool_choice_from_openai(body.get("tool_choice"), body.get("parallel_tool_calls")):
            out["tool_choice"] = choice


_SAMPLING = ("temperature", "top_p", "top_k")


def _system_from_openai(messages: list[Any], response_format: Any) -> str | list[JSON] | None:
    blocks: list[JSON] = []
    structured = False
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            continue
        content = message.get("content")
        if isinstance(content, list):
            structured = True
            blocks.extend(_text_block(part) for part in content if _is_text_part(part) and part["text"])
        elif isinstance(content, str) and content:
            blocks.append({"type": "text", "text": content})
    if instruction := _format_instruction(response_format):
        blocks.append({"type": "text", "text": instruction})
    if not blocks:
        return None
    return blocks if structured else "\n\n".join(block["text"] for block in blocks)


def _format_instruction(response_format: Any) -> str | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return _JSON_OBJECT_INSTRUCTION
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return _JSON_SCHEMA_INSTRUCTION + dump_json(schema)
    return None


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _text_block(part: Mapping[str, Any]) -> JSON:
    """An OpenAI text part as an Anthropic text block, keeping a ``cache_control`` marker if present."""
    block: JSON = {"type": "text", "text": part["text"]}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _turns_from_openai(messages: list[Any]) -> list[JSON]:
    turns: list[JSON] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            continue
        if role == "user":
            blocks = _blocks_from_openai(message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks_from_openai(message)
        elif role == "tool":
            role, blocks = "user", [_tool_result_from_openai(message)]
        else:
            raise ProtocolError(f"unsupported message role for Anthropic: {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        _compact_turn(turn)
    return turns


def _compact_turn(turn: JSON) -> None:
    """Tool results first (Anthropic requires it); a lone plain text block becomes a string."""
    blocks = turn["content"]
    if len(blocks) > 1:
        turn["content"] = sorted(blocks, key=_not_tool_result)
    elif len(blocks[0]) == 2 and blocks[0]["type"] == "text":  # {"type", "text"}: nothing else to keep
        turn["content"] = blocks[0]["text"]


def _not_tool_result(block: JSON) -> bool:
    return bool(block["type"] != "tool_result")


def _blocks_from_openai(content: Any) -> list[JSON]:
    """User (or tool-result) content: text and images; anything else cannot be expressed."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for part in content or ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append(_text_block(part))
        elif kind == "image_url":
            blocks.append(_image_block(part["image_url"]))
        elif kind == "file":
            blocks.append(_document_block(part.get("file") or {}))
        else:
            raise ProtocolError(f"unsupported content part for Anthropic: {kind!r}")
    return blocks


def _image_block(image_url: Any) -> JSON:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise ProtocolError("image_url part without a url")
    if data_url := parse_data_url(url):
        media_type, data = data_url
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ProtocolError("image_url must be a base64 data URL or an http(s) URL")


def _document_block(file: Mapping[str, Any]) -> JSON:
    data_url = parse_data_url(file.get("file_data") or "")
    if data_url is None:
        raise ProtocolError("file parts need base64 `file_data` to be sent to Anthropic")
    media_type, data = data_url
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks_from_openai(message: Mapping[str, Any]) -> list[JSON]:
    content = message.get("content")
    texts = [content] if isinstance(content, str) else [_part_text(part) for part in content or ()]
    blocks: list[JSON] = [{"type": "text", "text": text} for text in texts if text]
    return blocks + [_tool_use_block(call) for call in message.get("tool_calls") or ()]


def _tool_use_block(call: Mapping[str, Any]) -> JSON:
    """An OpenAI tool call as a ``tool_use`` block: the id is kept, the arguments become an object."""
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id") or new_id("toolu_"),
        "name": function.get("name", ""),
        "input": parse_arguments(function.get("arguments")),
    }


def _assistant_message_from_blocks(blocks: Any) -> JSON:
    """Assistant content blocks as an OpenAI message: text joined, thinking as reasoning, tool calls.

    Other blocks (redacted thinking, server-tool blocks) mean nothing to another model: skipped.
    """
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[JSON] = []
    for block in blocks or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "tool_use":
            arguments = dump_json(block.get("input") or {})
            calls.append(tool_call(block.get("id") or new_id("call_"), block.get("name", ""), arguments))
    return assistant_message("".join(texts), "".join(thinking), calls)


def _part_text(part: Any) -> str:
    """Text of an assistant content part (``text`` or ``refusal``)."""
    if not isinstance(part, dict):
        return ""
    value = part.get("text") if part.get("type") == "text" else part.get("refusal")
    return value if isinstance(value, str) else ""


def _tool_result_from_openai(message: Mapping[str, Any]) -> JSON:
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id") or "",
        "content": content if isinstance(content, str) else _blocks_from_openai(content),
    }


def _tool_from_openai(tool: Any) -> JSON:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ProtocolError("only function tools can be sent to Anthropic")
    function = tool.get("function") or {}
    out: JSON = {"name": function.get("name", "")}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice_from_openai(choice: Any, parallel: Any) -> JSON | None:
    result: JSON | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise ProtocolError(f"unsupported tool_choice: {choice!r}")
    if parallel is False and (result is None or result["type"] != "none"):
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _thinking_from_openai(body: Mapping[str, Any], max_tokens: int) -> JSON | None:
    """Extended thinking from ``thinking`` (Anthropic-shaped), ``reasoning_effort`` or ``think``."""
    if isinstance(body.get("thinking"), dict):
        return dict(body["thinking"])
    effort = body.get("reasoning_effort")
    think = body.get("think")
    if effort is None and think is not None:
        effort = think if isinstance(think, str) else ("medium" if think is True else None)
    budget = min(EFFORT_BUDGET.get(effort, 0) if isinstance(effort, str) else 0, max_tokens - 1)
    return {"type": "enabled", "budget_tokens": budget} if budget >= _MIN_BUDGET else None


def _counts(usage: Mapping[str, Any], counts: dict[str, int] | None = None) -> dict[str, int]:
    """The integer fields of an Anthropic usage object (nested objects such as server_tool_use
    skipped), added to ``counts`` (a new dict if None): later counts replace earlier ones."""
    if counts is None:
        counts = {}
    for key, value in usage.items():
        if type(value) is int:  # (not a bool: a subclass)
            counts[key] = value
    return counts


def _usage_to_openai(usage: Any) -> JSON | None:
    return _openai_usage(_counts(usage)) if isinstance(usage, Mapping) else None


def _openai_usage(counts: Mapping[str, int]) -> JSON:
    cache_read = counts.get("cache_read_input_tokens")
    prompt = counts.get("input_tokens", 0) + counts.get("cache_creation_input_tokens", 0) + (cache_read or 0)
    return make_usage(prompt, counts.get("output_tokens", 0), cache_read)


def response_to_openai(msg: JSON, *, model: str | None = None) -> JSON:
    """An Anthropic ``message`` as a ``chat.completion``: all text blocks, tool calls, reasoning."""
    return completion(
        id=msg.get("id") or new_id("chatcmpl-"),
        model=model or msg.get("model") or "",
        created=now(),
        message=_assistant_message_from_blocks(msg.get("content")),
        finish_reason=_STOP_TO_FINISH.get(msg.get("stop_reason") or "end_turn", "stop"),
        usage=_usage_to_openai(msg.get("usage")),
    )


@dataclass(slots=True)
class _UpstreamBlock:
    kind: str  # "text", "thinking", "tool_use", or another (ignored) block type
    tool_index: int = -1  # OpenAI index: counts tool calls only, not all blocks
    has_arguments: bool = False


class StreamToOpenAI:
    """Anthropic stream events → OpenAI chunks (backend direction).

    Block indexes are Anthropic's; the OpenAI ``tool_calls[].index`` counts tool calls only. A tool
    call whose arguments never arrived gets ``"{}"`` at its block stop, so clients always parse an
    object. ``ping``, ``signature_delta`` and unknown events are ignored; ``error`` raises
    :class:`UpstreamStreamError`. :meth:`finish` raises :class:`ProtocolError` if the upstream stream
    ended before ``message_delta`` (the answer is incomplete); a missing ``message_stop`` alone is
    tolerated. ``usage`` is the OpenAI usage the stream amounts to, set at ``message_stop`` even when
    ``include_usage`` leaves it out of the chunks (the gateway logs it either way).

    The gateway uses :meth:`feed_bytes` and :meth:`finish_bytes`: the upstream's bytes in, OpenAI
    SSE out. The chunks are made as SSE frames from the stream's template (:class:`ChunkFrames`),
    never as dicts; :meth:`feed` and :meth:`finish` (decoded events in) read them back as dicts.
    """

    __slots__ = (
        "_blocks",
        "_decoder",
        "_finished",
        "_frames",
        "_include_usage",
        "_model",
        "_stopped",
        "_tool_count",
        "_usage",
        "usage",
    )

    def __init__(self, include_usage: bool, model: str) -> None:
        self._include_usage = include_usage
        self._model = model
        self._frames: ChunkFrames | None = None  # from the first event on: the stream's id is known
        self._blocks: dict[int, _UpstreamBlock] = {}
        self._tool_count = 0
        self._usage: dict[str, int] = {}
        self._finished = False  # message_delta seen
        self._stopped = False  # message_stop seen
        self._decoder = SSEDecoder()  # for feed_bytes
        self.usage: JSON | None = None

    def feed(self, event: SSEEvent) -> list[JSON]:
        return [read_frame(frame) for frame in self._event(_load_event(event), event.event)]

    def finish(self) -> list[JSON]:
        return [read_frame(frame) for frame in self._finish()]

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None:
        """The upstream's bytes as they arrive → OpenAI SSE frames, appended to ``out`` event by
        event (on an error, the frames made before it are there to go out first).

        The same frames as decoding ``chunk`` with :class:`SSEDecoder` and translating each event,
        but the events of a plain text answer, in the form the API sends them (:data:`_SCAN`), are
        recognised in their raw text and take a short path: the JSON string of a text delta, already
        as orjson would write it, is carried over as it is, and the deltas that follow it are taken
        in one go (:func:`~.sse.text_run`) and framed together.
        """
        decoder = self._decoder
        text = decoder.feed_text(chunk)
        if text is None:  # the general path: no raw text to look at
            for decoded in decoder.feed(chunk):
                out += self._event(_load_event(decoded), decoded.event)
            return
        # (decoder.event is skipped for the events matched here: one-data-line events, it keeps no
        # state from them)
        pos, end, in_bulk = 0, len(text), True
        while pos < end:
            match = _SCAN.match(text, pos)
            assert match is not None  # (any block matches `other`)
            pos = match.end()
            kind = match.lastgroup
            if kind == "text":
                if (begin := match["begin"]) is not None:
                    out += self._event(_load_data(begin), "message_start")
                if self._frames is None:  # a text before message_start: no id yet
                    for block in text[match.start("text") - len("event: ") : match.end("text")].split("\n\n"):
                        self._block(block, out)  # (from the "event: " the text group follows)
                    continue
                if (opened := match["opened"]) is not None:  # what _block_start does for it
                    self._blocks[int(opened)] = _UpstreamBlock("text")
                texts = [match["string"]]
                head = "event: " + match["head"]
                if in_bulk and text.startswith(head, pos):  # more deltas follow
                    more, pos = text_run(text, pos, head, '"}}')
                    texts += more
                    in_bulk = False
                out.append(self._frames.contents(texts))
            elif kind == "tail":
                out += self._block_stop(int(match["last"]))
                out += self._event(_load_data(match["final"]), "message_delta")
                if match["stopped"] is not None:
                    out += self._message_stop()
            elif kind == "data":
                out += self._event(_load_data(match["data"]), match["name"])
            elif kind == "other":
                if block := match["other"]:
                    self._block(block, out)
            elif kind == "start":  # what _block_start does (an empty text gives no chunk)
                self._blocks[int(match["start"])] = _UpstreamBlock("text")
            elif kind == "stop":
                out += self._block_stop(int(match["stop"]))
            elif kind == "end":
                out += self._message_stop()
            # else a ping: nothing

    def _block(self, block: str, out: list[bytes]) -> None:
        if (event := self._decoder.event(block)) is not None:
            out += self._event(_load_event(event), event.event)

    def finish_bytes(self, out: list[bytes]) -> None:
        """The end of the upstream's bytes: its last event if unterminated, then :meth:`finish`."""
        for event in self._decoder.flush():
            out += self._event(_load_event(event), event.event)
        out += self._finish()

    def _event(self, data: JSON, name: str | None) -> list[bytes]:
        kind = data.get("type") or name
        if kind == "error":
            error = data.get("error") or {}
            raise UpstreamStreamError(
                str(error.get("message") or "upstream error"), str(error.get("type") or "api_error")
            )
        if kind == "message_start":
            return self._message_start(data.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if kind == "content_block_stop":
            return self._block_stop(data.get("index", 0))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._message_stop()
        return []  # ping and event types added in the future

    def _finish(self) -> list[bytes]:
        if self._stopped:
            return []
        if not self._finished:
            raise ProtocolError("Anthropic stream ended before the message was complete")
        return self._message_stop()

    def _chunks(self, message_id: str | None = None) -> ChunkFrames:
        if self._frames is None:
            self._frames = ChunkFrames(message_id or new_id("chatcmpl-"), self._model, now())
        return self._frames

    def _message_start(self, message: Mapping[str, Any]) -> list[bytes]:
        if self._frames is not None:
            return []  # a repeated message_start must not restart the stream
        self._record_usage(message.get("usage"))
        return [self._chunks(message.get("id")).first()]

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[bytes]:
        kind = str(block.get("type"))
        state = self._blocks[index] = _UpstreamBlock(kind)
        if kind == "text":
            return self._text("content", block.get("text"))
        if kind == "thinking":
            return self._text("reasoning_content", block.get("thinking"))
        if kind != "tool_use":
            return []
        state.tool_index = self._tool_count
        self._tool_count += 1
        header = tool_call_header(state.tool_index, block.get("id") or new_id("call_"), block.get("name", ""))
        chunks = [self._chunks().delta({"tool_calls": [header]})]
        if block.get("input"):  # complete input up front (not streamed)
            chunks += self._arguments(state, dump_json(block["input"]))
        return chunks

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[bytes]:
        state = self._blocks.get(index)
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text("content", delta.get("text"))
        if kind == "thinking_delta":
            return self._text("reasoning_content", delta.get("thinking"))
        if kind == "input_json_delta" and state is not None and state.kind == "tool_use":
            return self._arguments(state, delta.get("partial_json") or "")
        return []  # signature_delta, citations_delta: no OpenAI field

    def _block_stop(self, index: int) -> list[bytes]:
        state = self._blocks.get(index)
        if state is not None and state.kind == "tool_use" and not state.has_arguments:
            return self._arguments(state, "{}")
        return []

    def _arguments(self, state: _UpstreamBlock, fragment: str) -> list[bytes]:
        if not fragment:
            return []
        state.has_arguments = True
        return [self._chunks().delta({"tool_calls": [tool_call_fragment(state.tool_index, fragment)]})]

    def _text(self, field: str, value: Any) -> list[bytes]:
        """One chunk for a non-empty text (``content`` or ``reasoning_content``); none for empty text."""
        return [self._chunks().delta({field: value})] if isinstance(value, str) and value else []

    def _message_delta(self, data: Mapping[str, Any]) -> list[bytes]:
        self._record_usage(data.get("usage"))
        self._finished = True
        stop_reason = (data.get("delta") or {}).get("stop_reason") or "end_turn"
        return [self._chunks().finish(_STOP_TO_FINISH.get(stop_reason, "stop"))]

    def _message_stop(self) -> list[bytes]:
        self._stopped = True
        self.usage = _openai_usage(self._usage)
        if not self._include_usage:
            return []
        return [self._chunks().usage(self.usage)]

    def _record_usage(self, usage: Any) -> None:
        """Anthropic usage counts are cumulative: later values replace earlier ones. (Parsed JSON:
        ``dict``, checked as such; see :func:`~.openai.usage_of`.)"""
        if isinstance(usage, dict):
            _counts(usage, self._usage)


_INDEX = r"(?:0|[1-9][0-9]*)"  # as JSON writes a block index
_PLAIN_STRING = r'(?!")[^"\\\x00-\x1f]*(?:\\["\\bfnrt][^"\\\x00-\x1f]*)*'
"""What is between the quotes of a non-empty JSON string as orjson writes it, so that decoding and
encoding it again would give the same bytes: no control character, and no escape but the short ones
(orjson writes ``\\uXXXX`` only for the other control characters, and never ``\\/``)."""

_DATA = r"\ndata: (?P<{}>\{{[^\n]*\}})"  # the one data line of an event parsed as JSON
_TEXT_START = (
    r'content_block_start\ndata: \{{"type":"content_block_start","index":'
    r"(?P<{}>" + _INDEX + r'),"content_block":\{{"type":"text","text":""\}}\}}'
)
_PING = r'ping\ndata: \{"type":"ping"\}'
_MESSAGE_STOP = r'message_stop\ndata: \{"type":"message_stop"\}'
_BLOCK_STOP = r'content_block_stop\ndata: \{{"type":"content_block_stop","index":(?P<{}>' + _INDEX + r")\}}"
_SCAN = re.compile(
    r"(?:event: (?:"
    rf"(?:message_start{_DATA.format('begin')}\n\nevent: )?"
    rf"(?P<text>(?:{_TEXT_START.format('opened')}\n\nevent: )?(?:{_PING}\n\nevent: )?"
    r'(?P<head>content_block_delta\ndata: \{"type":"content_block_delta","index":' + _INDEX + r","
    rf'"delta":\{{"type":"text_delta","text":")(?P<string>{_PLAIN_STRING})"\}}\}})'
    rf"|(?P<tail>{_BLOCK_STOP.format('last')}\n\nevent: message_delta{_DATA.format('final')}"
    rf"(?:\n\nevent: (?P<stopped>{_MESSAGE_STOP}))?)"
    rf"|{_TEXT_START.format('start')}"
    rf"|{_BLOCK_STOP.format('stop')}"
    rf"|(?P<ping>{_PING})"
    rf"|(?P<end>{_MESSAGE_STOP})"
    rf"|(?P<name>message_start|message_delta){_DATA.format('data')}"
    r")|(?P<other>[^\n]*(?:\n(?!\n)[^\n]*)*))(?:\n\n|\Z)"
)
"""One event of the text :meth:`SSEDecoder.feed_text` gives per match (or a few that come together),
for the short path of :meth:`StreamToOpenAI.feed_bytes`, told apart by the group that matched
(``lastgroup``: each alternative's outermost group closes last). The events of a plain text answer
exactly as the Messages API sends them, in the groups they usually come in: a text delta (``text``)
with a non-empty text, its JSON string a :data:`_PLAIN_STRING` (``head`` is all before it), with
``message_start`` (``begin``), the start of its text block (``opened``) and a ping before it when
those came in the same read; the end of the answer (``tail``: the end of the last block, then
``message_delta`` and ``message_stop``); and each of those events alone.

The two events with variable fields, ``message_start`` and ``message_delta``, are parsed from their
one ``data`` line at once, and any other event (``other``, possibly empty, as between two blank
lines) goes the general way."""


def _load_event(event: SSEEvent) -> JSON:
    return _load_data(event.data)


def _load_data(text: str) -> JSON:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON in Anthropic stream: {text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("Anthropic stream event data is not an object")
    return data


# ====================================================================================================
# Client direction: an Anthropic client's request → internal, and internal answers → Anthropic.
# ====================================================================================================


def request_to_openai(body: JSON) -> JSON:
    """An Anthropic Messages request as an internal chat-completions request."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ProtocolError("`messages` must be an array")
    out: JSON = {"model": body.get("model")}
    out["messages"] = _system_to_openai(body.get("system")) + [
        converted for message in messages for converted in _message_to_openai(message)
    ]
    if isinstance(body.get("max_tokens"), int):
        out["max_tokens"] = body["max_tokens"]
    out.update({key: body[key] for key in ("temperature", "top_p", "top_k") if body.get(key) is not None})
    if stop := stop_list(body.get("stop_sequences")):
        out["stop"] = stop
    if isinstance((body.get("metadata") or {}).get("user_id"), str):
        out["user"] = body["metadata"]["user_id"]
    if tools := body.get("tools"):
        out["tools"] = [_tool_to_openai(tool) for tool in tools]
    out.update(_tool_choice_to_openai(body.get("tool_choice")))
    if effort := _effort_to_openai(body.get("thinking"), body.get("output_config")):
        out["reasoning_effort"] = effort
    if response_format := _response_format_to_openai(body.get("output_config")):
        out["response_format"] = response_format
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # needed for message_delta usage
    elif body.get("stream") is False:
        out["stream"] = False
    return out


def _system_to_openai(system: Any) -> list[JSON]:
    text = system if isinstance(system, str) else content_text(system, "\n\n")
    return [{"role": "system", "content": text}] if text else []


def _message_to_openai(message: Any) -> list[JSON]:
    role = message.get("role") if isinstance(message, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if role == "user":
        return _user_to_openai(content)
    if role == "assistant":
        return [_assistant_to_openai(content)]
    raise ProtocolError(f"unsupported message role: {role!r}")


def _user_to_openai(content: Any) -> list[JSON]:
    """A user turn: its tool results become ``tool`` messages, placed first; the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for block in content or ():
        if isinstance(block, dict) and block.get("type") == "tool_result":
            text, extra = _tool_result_to_openai(block.get("content"))
            tool_messages.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}
            )
            parts += extra
        else:
            parts.append(_part_to_openai(block))
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _tool_result_to_openai(content: Any) -> tuple[str, list[JSON]]:
    """A tool result's text, and its non-text parts (OpenAI tool messages hold text only).

    The non-text parts (images) move into the user message that follows the tool messages.
    """
    if isinstance(content, str):
        return content, []
    parts = [_part_to_openai(block) for block in content or ()]
    text = "\n".join(part["text"] for part in parts if part["type"] == "text")
    return text, [part for part in parts if part["type"] != "text"]


def _part_to_openai(block: Any) -> JSON:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind in ("image", "document"):
        source = block.get("source") or {}
        if source.get("type") == "url" and kind == "image":
            return {"type": "image_url", "image_url": {"url": source.get("url")}}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            if kind == "image":
                return {"type": "image_url", "image_url": {"url": url}}
            return {"type": "file", "file": {"file_data": url, "filename": block.get("title") or "document"}}
        if source.get("type") == "text" and kind == "document":
            return {"type": "text", "text": source.get("data") or ""}
    raise ProtocolError(f"unsupported content block for a non-Anthropic backend: {kind!r}")


def _assistant_to_openai(content: Any) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    return _assistant_message_from_blocks(content)


def _tool_to_openai(tool: Any) -> JSON:
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise ProtocolError(f"Anthropic server tool {kind!r} is only available on an Anthropic backend")
    function: JSON = {"name": tool.get("name", "")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: Any) -> JSON:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    out: JSON = {}
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def _effort_to_openai(thinking: Any, output_config: Any) -> str | None:
    """A thinking budget (or ``output_config.effort``) as the nearest ``reasoning_effort`` level."""
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if isinstance(effort, str):
        return effort if effort in ("low", "medium", "high") else "high"
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens")
    if thinking.get("type") != "enabled" or not isinstance(budget, int):
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _response_format_to_openai(output_config: Any) -> JSON | None:
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.get("schema") or {}}}
    return None


def _stop_reason(finish_reason: Any, has_tool_calls: bool) -> str:
    stop = _FINISH_TO_STOP.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    return "tool_use" if has_tool_calls and stop == "end_turn" else stop


def _usage_from_openai(prompt: int | None, completion: int | None, cached: int | None) -> JSON:
    return {
        "input_tokens": max((prompt or 0) - (cached or 0), 0),
        "output_tokens": completion or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached or 0,
    }


def response_from_openai(resp: JSON, *, model: str) -> JSON:
    """A ``chat.completion`` as an Anthropic ``message`` (thinking, text, tool_use blocks)."""
    choice = first_choice(resp)
    message = choice.get("message") or {}
    content: list[JSON] = []
    if reasoning := reasoning_of(message):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := content_text(message.get("content"), "") or message.get("refusal"):
        content.append({"type": "text", "text": text})
    content += [_tool_use_block(call) for call in message.get("tool_calls") or ()]
    prompt, completion_tokens = usage_of(resp)
    return _message(
        new_id("msg_"),
        model,
        content,
        _stop_reason(choice.get("finish_reason"), bool(message.get("tool_calls"))),
        _usage_from_openai(prompt, completion_tokens, cached_tokens_of(resp)),
    )


def _message(id: str, model: str, content: list[JSON], stop_reason: str | None, usage: JSON) -> JSON:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


@dataclass(slots=True)
class _OpenBlock:
    kind: str  # "text", "thinking" or "tool_use"
    index: int


class StreamFromOpenAI:
    """Internal (OpenAI) chunks → the Anthropic event sequence (client direction).

    ``message_start`` comes with the first chunk; each text, thinking or tool call becomes one content
    block (``content_block_start``, deltas, ``content_block_stop``) with block indexes 0, 1, 2…;
    :meth:`finish` closes the open block and sends ``message_delta`` (stop reason, usage) and
    ``message_stop``. It is also correct when the upstream never sent ``[DONE]`` or a finish reason.
    Tool calls are assumed to arrive one after another, as every OpenAI-compatible server sends them.

    :meth:`feed` and :meth:`finish` take chunk dicts and give ``(name, data)`` pairs; the gateway
    uses :meth:`feed_bytes` and :meth:`finish_bytes`, OpenAI SSE bytes in and the same events out as
    Anthropic SSE, with a fast path for text.
    """

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._id = message_id or new_id("msg_")
        self._started = False
        self._done = False
        self._open: _OpenBlock | None = None
        self._next_index = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index → Anthropic block index
        self._finish_reason: str | None = None
        self._usage = StreamUsage()
        self._decoder = SSEDecoder()  # for feed_bytes
        # The data line of a plain content chunk of this stream around its text, learnt from the
        # first one (_learn): every server repeats its own chunk with only the text changed.
        self._content_line: tuple[str, str] | None = None
        self._lessons = 3  # chunks to learn it from before giving up (a server that varies more)

    def feed(self, chunk: JSON) -> list[Event]:
        raise_for_error(chunk)
        events = self._start()
        self._usage.record(chunk)
        parts = delta_parts(first_choice(chunk))
        if parts.reasoning:
            events += self._text("thinking", parts.reasoning)
        if parts.content:
            events += self._text("text", parts.content)
        for piece in parts.tool_calls:
            events += self._tool_piece(piece)
        if parts.finish_reason:
            self._finish_reason = parts.finish_reason
            events += self._close()
        return events

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None:
        """OpenAI SSE bytes as they arrive → Anthropic SSE frames, appended to ``out`` one by one
        (on an error, the frames made before it are there to go out first).

        The same bytes as decoding ``chunk`` with :class:`SSEDecoder`, parsing each event with
        :func:`~.openai.parse_stream_event` and encoding what :meth:`feed` gives; but a one-line
        event's data is parsed straight from the raw text, and text continuing the open text
        block, nearly every chunk of a stream, is framed from a template (the one delta
        :meth:`_text` would give). Once the stream's own form of such a chunk is known, the chunks
        in that form that came in one read are not parsed at all: their texts are taken in one go
        (:func:`~.sse.text_run`). An event the upstream left unterminated is not read.
        """
        decoder = self._decoder
        text = decoder.feed_text(chunk)
        if text is None:  # the general path: no raw text to look at
            for decoded in decoder.feed(chunk):
                self._encode(parse_stream_event(decoded), out)
            return
        pos, end, in_bulk = 0, len(text), True
        while pos < end:
            line, opened = self._content_line, self._open
            if in_bulk and line and opened and opened.kind == "text" and text.startswith(line[0], pos):
                in_bulk = False  # (text_run: once per read)
                texts, pos = text_run(text, pos, *line)
                if texts:
                    out.append(_text_deltas(opened.index, texts))
                    continue
            stop = text.find("\n\n", pos)
            block = text[pos : stop if stop >= 0 else end]
            pos = stop + 2 if stop >= 0 else end
            if block.startswith("data: ") and "\n" not in block:  # what decoder.event would read
                self._encode(parse_stream_data(block[6:]), out, block)
            elif (event := decoder.event(block)) is not None:
                self._encode(parse_stream_event(event), out)

    def finish_bytes(self, out: list[bytes]) -> None:
        """The last event too if the stream ended without its blank line (see :meth:`SSEDecoder.flush`)."""
        for event in self._decoder.flush():
            self._encode(parse_stream_event(event), out)
        out.append(encode_events(self.finish()))

    def _encode(self, chunk: JSON | None, out: list[bytes], line: str | None = None) -> None:
        if chunk is None:  # [DONE]
            return
        block = self._open
        if block is not None and block.kind == "text":
            text = plain_content(chunk)
            if text is not None:
                dumped = orjson.dumps(text)
                if line is not None and self._content_line is None and self._lessons:
                    self._learn(line, dumped.decode())
                out.append(_TEXT_DELTA_FRAME % (block.index, dumped))
                return
        out.append(encode_events(self.feed(chunk)))

    def _learn(self, line: str, dumped: str) -> None:
        """The stream's content chunk around its text, from ``line``, a plain content chunk whose text
        is ``dumped`` (as orjson writes it) once, with ``"content":`` nowhere else in it."""
        self._lessons -= 1
        at = line.find('"content":' + dumped)
        if at >= 0 and line.count('"content":') == 1:
            start = at + len('"content":') + 1  # (past the opening quote)
            self._content_line = line[:start], line[start + len(dumped) - 2 :]

    def finish(self) -> list[Event]:
        if self._done:
            return []
        self._done = True
        events = self._start() + self._close()
        usage = _usage_from_openai(self._usage.prompt, self._usage.completion, self._usage.cached)
        if self._usage.prompt is None:
            del usage["input_tokens"], usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]
        delta = {
            "stop_reason": _stop_reason(self._finish_reason, bool(self._tool_blocks)),
            "stop_sequence": None,
        }
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def error_event(self, message: str, type: str) -> Event:
        """The ``error`` event to send when the upstream fails mid-stream (the SDKs raise on it)."""
        return ("error", error_body(message, type))

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        usage = {"input_tokens": 0, "output_tokens": 0}
        message = _message(self._id, self._model, [], None, usage)
        return [("message_start", {"type": "message_start", "message": message})]

    def _open_block(self, kind: str, block: JSON) -> list[Event]:
        events = self._close()
        self._open = _OpenBlock(kind, self._next_index)
        self._next_index += 1
        data = {"type": "content_block_start", "index": self._open.index, "content_block": block}
        return [*events, ("content_block_start", data)]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        index, self._open = self._open.index, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _text(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open.kind != kind:
            block = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            events = self._open_block(kind, block)
        assert self._open is not None
        delta = (
            {"type": "text_delta", "text": text}
            if kind == "text"
            else {"type": "thinking_delta", "thinking": text}
        )
        return [*events, _block_delta(self._open.index, delta)]

    def _tool_piece(self, piece: Any) -> list[Event]:
        if not isinstance(piece, dict):
            return []
        tool_index = piece.get("index", len(self._tool_blocks))
        function = piece.get("function") or {}
        events: list[Event] = []
        if tool_index not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": piece.get("id") or new_id("toolu_"),
                "name": function.get("name", ""),
                "input": {},
            }
            events = self._open_block("tool_use", block)
            assert self._open is not None
            self._tool_blocks[tool_index] = self._open.index
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = dump_json(arguments)
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(_block_delta(self._tool_blocks[tool_index], delta))
        return events


def _block_delta(index: int, delta: JSON) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _text_deltas(index: int, texts: list[str]) -> bytes:
    """``_TEXT_DELTA_FRAME`` for each of ``texts`` (each what is between its JSON string's quotes)."""
    opening, closing = (_TEXT_DELTA_FRAME % (index, b'"\0"')).decode().split("\0")
    return (opening + (closing + opening).join(texts) + closing).encode()


_TEXT_DELTA_FRAME = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":%b}}\n\n'
)
"""``encode_events([_block_delta(index, {"type": "text_delta", "text": text})])``, as a template."""


def encode_events(events: list[Event]) -> bytes:
    """Events framed as Anthropic SSE (``event:`` and ``data:`` lines), in one piece."""
    return b"".join([encode_event(orjson.dumps(data), name) for name, data in events])


# ====================================================================================================
# Errors and token counting
# ====================================================================================================


def error_body(message: str, type: str) -> JSON:
    """The Anthropic error shape, for HTTP error bodies and the stream ``error`` event alike."""
    return {"type": "error", "error": {"type": type, "message": message}}


def error_type_for_status(status: int) -> str:
    """The Anthropic error type clients expect for an HTTP status."""
    return _STATUS_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_to_openai(body: Any, status: int = 500) -> JSON:
    """An Anthropic error body (from an upstream) as the OpenAI error payload; the type is kept."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return error_payload(str(body), openai_error_type(status), None)
    kind = error.get("type")
    return error_payload(str(error.get("message") or ""), str(kind or openai_error_type(status)), None)


def error_from_openai(body: Any, status: int = 500) -> JSON:
    """An OpenAI error payload (or ``{"error": "text"}``) as an Anthropic error body."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = error.get("type")
        message = str(error.get("message") or "")
    else:
        kind, message = None, str(error if error is not None else body)
    return error_body(message, kind if kind in _ERROR_TYPES else error_type_for_status(status))


_IMAGE_TOKENS = 1600  # Anthropic's cost of a full-size image; sizes are unknown without decoding
_MESSAGE_OVERHEAD = 4
_SKIPPED_KEYS = frozenset({"type", "id", "tool_use_id", "cache_control", "signature", "source"})


def count_tokens_estimate(body: JSON) -> int:
    """A tokenizer-free estimate of a Messages request's input tokens (``/v1/messages/count_tokens``).

    ASCII text counts a token per 4 characters, other characters one each (CJK text is about a token
    per character, so this errs on the high side for accented Latin text, which is the safe side for
    context gating); each image or document counts :data:`_IMAGE_TOKENS`; each message adds a small
    overhead. Tool definitions count as their JSON.
    """
    chars = _Chars()
    chars.walk(body.get("system"))
    for message in body.get("messages") or ():
        chars.walk(message.get("content") if isinstance(message, dict) else None)
    for tool in body.get("tools") or ():
        chars.add(dump_json(tool))
    messages = len(body.get("messages") or ())
    text_tokens = math.ceil(chars.ascii / 4) + chars.other
    return max(1, text_tokens + chars.images * _IMAGE_TOKENS + messages * _MESSAGE_OVERHEAD)


class _Chars:
    __slots__ = ("ascii", "images", "other")

    def __init__(self) -> None:
        self.ascii = 0
        self.other = 0
        self.images = 0

    def add(self, text: str) -> None:
        ascii_count = sum(1 for char in text if char < "\x80")
        self.ascii += ascii_count
        self.other += len(text) - ascii_count

    def walk(self, node: Any) -> None:
        if isinstance(node, str):
            self.add(node)
        elif isinstance(node, list):
            for item in node:
                self.walk(item)
        elif isinstance(node, dict):
            if node.get("type") in ("image", "document"):
                self.images += 1
            for key, value in node.items():
                if key == "input":
                    self.add(dump_json(value))
                elif key not in _SKIPPED_KEYS:
                    self.walk(value)


# ====================================================================================================
# The client's request shape: what an Anthropic client is told to fix when it could not be read.
# ====================================================================================================

_BLOCK_FIELDS: dict[str, Shape] = {
    "type": STRING,
    "text": STRING,
    "thinking": STRING,
    "id": STRING,
    "name": STRING,
    "input": OBJECT,
    "tool_use_id": STRING,
    "source": Obj({"type": STRING, "media_type": STRING, "data": STRING, "url": STRING}),
    "title": STRING,
}
_INNER_BLOCK = Obj(_BLOCK_FIELDS, ("type",), "an object with a string 'type'")
_BLOCK = Obj(
    {**_BLOCK_FIELDS, "content": text_or(_INNER_BLOCK, "content blocks")},
    ("type",),
    "an object with a string 'type'",
)
_BLOCKS = text_or(_BLOCK, "content blocks")
MESSAGES_REQUEST = Obj(
    {
        "model": STRING,
        "max_tokens": INTEGER,
        "messages": messages_of({"content": _BLOCKS}),
        "system": _BLOCKS,
        "tools": Arr(
            Obj({"type": STRING, "name": STRING, "description": STRING, "input_schema": OBJECT}),
            "an array of tools",
        ),
        "tool_choice": Obj({"type": STRING, "name": STRING, "disable_parallel_tool_use": BOOLEAN}),
        "stop_sequences": STRINGS,
        "temperature": NUMBER,
        "top_p": NUMBER,
        "top_k": INTEGER,
        "metadata": Obj({"user_id": STRING}),
        "thinking": Obj({"type": STRING, "budget_tokens": INTEGER}),
        "output_config": Obj({"effort": STRING, "format": Obj({"type": STRING, "schema": OBJECT})}),
        "stream": BOOLEAN,
    }
)
"""A Messages request as :func:`request_to_openai` reads it (:mod:`.shapes`)."""
