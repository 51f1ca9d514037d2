"""Ollama native API (``/api/chat``, ``/api/generate``) ⇄ internal (OpenAI) format, both directions.

Backend direction (the gateway calls Ollama's ``/api/chat``): :func:`chat_request_from_openai`,
:func:`chat_response_to_openai`, :class:`ChatStreamToOpenAI`. Client direction (Home Assistant, Open
WebUI… call the gateway as if it were Ollama): :func:`chat_request_to_openai`,
:func:`generate_request_to_openai`, :func:`chat_response_from_openai`,
:func:`generate_response_from_openai`, :class:`ChatStreamFromOpenAI`, :class:`GenerateStreamFromOpenAI`,
plus the ``/api/tags``, ``/api/show`` and ``/api/version`` shapes.

Decisions (each fixes or avoids a known defect of the Rust gateway or of peer gateways):

- Tool calls come only from Ollama's native ``message.tool_calls``: prose is never parsed into tool
  calls. Their OpenAI ids are fresh random ``call_`` ids (or Ollama's own id when it sends one), so
  they never repeat across turns.
- Images: OpenAI data URLs become native base64 ``images``. Ollama cannot take an image URL and this
  layer does no I/O, so an http(s) image stays a text note ``[image: <url>]`` in the message (rather
  than being passed as if it were base64, which Ollama rejects).
- OpenAI ``tool`` messages get Ollama's ``tool_name``, looked up from the assistant tool call they
  answer. Inbound, Ollama tool results (which carry no id) are paired with the preceding assistant's
  tool calls by name, else in order, so backends that need ids (OpenAI, Anthropic) get consistent ones.
- Options: ``default_options`` (backend config) < the request's native ``options`` < its OpenAI
  sampling fields; explicit values always win over defaults. ``keep_alive``: the request's own value
  wins over the backend's configured one.
- Streams to Ollama clients end with exactly one ``done: true`` line with EMPTY content (real Ollama
  does; repeating the text made clients show it twice), real token counts from the upstream usage, and
  it is emitted even when the upstream never sent ``[DONE]``. Tool calls are emitted once complete, in
  one line before the final one.
- Durations are not measured by this pure layer and are reported as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from . import ProtocolError
from .ndjson import NDJSONDecoder, encode_line
from .openai import (
    TOOLS,
    ChunkMaker,
    StreamUsage,
    ToolCallBuffer,
    as_count,
    assistant_message,
    completion,
    content_text,
    delta_parts,
    dump_json,
    encode_chunks,
    error_payload,
    error_type_for_status,
    first_choice,
    make_usage,
    max_tokens_of,
    new_id,
    now,
    parse_arguments,
    parse_data_url,
    parse_stream_event,
    raise_for_error,
    reasoning_of,
    stop_list,
    tool_call,
    usage_of,
)
from .shapes import BOOLEAN, INTEGER, OBJECT, STRING, STRING_OR_STRINGS, Arr, Either, Obj, Shape, messages_of
from .sse import SSEDecoder, SSEEvent

__all__ = [
    "OLLAMA_API_VERSION",
    "ChatStreamFromOpenAI",
    "ChatStreamToOpenAI",
    "GenerateStreamFromOpenAI",
    "chat_request_from_openai",
    "chat_request_to_openai",
    "chat_response_from_openai",
    "chat_response_to_openai",
    "error_line",
    "error_to_openai",
    "generate_request_to_openai",
    "generate_response_from_openai",
    "request_for_openai_upstream",
    "show_payload",
    "tags_payload",
    "version_payload",
]

JSON = dict[str, Any]

OLLAMA_API_VERSION = "0.12.0"
"""The version ``/api/version`` reports: recent enough that clients enable tools and thinking."""

_SAMPLING = ("temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty")
"""Fields that are top-level in an OpenAI request and ``options`` entries in an Ollama one."""

_SUFFIX_INSTRUCTION = (
    "Your reply will be inserted directly before the following text; write only what belongs before "
    "it and do not repeat it:\n"
)
_IMAGE_SIGNATURES = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)
_ZERO_DIGEST = "sha256:" + "0" * 64


def _created_at() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ====================================================================================================
# Backend direction: internal (OpenAI) request → Ollama /api/chat, and its answers back.
# ====================================================================================================


def chat_request_from_openai(
    body: JSON, *, model: str, default_options: Mapping[str, Any] | None, keep_alive: Any = None
) -> JSON:
    """An internal chat-completions request as a native ``/api/chat`` request for ``model``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ProtocolError("`messages` must be an array")
    out: JSON = {
        "model": model,
        "messages": _messages_from_openai(messages),
        "stream": body.get("stream") is True,
    }
    if tools := [tool for tool in body.get("tools") or () if tool.get("type", "function") == "function"]:
        out["tools"] = tools
    if (think := _think_from_openai(body)) is not None:
        out["think"] = think
    if (fmt := _format_from_openai(body)) is not None:
        out["format"] = fmt
    if options := _options_from_openai(body, default_options):
        out["options"] = options
    if (alive := body.get("keep_alive", keep_alive)) is not None:
        out["keep_alive"] = alive
    return out


def _messages_from_openai(messages: list[Any]) -> list[JSON]:
    tool_names: dict[str, str] = {}  # tool_call_id → function name, from earlier assistant messages
    out: list[JSON] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            out.append({"role": "system", "content": content_text(content)})
        elif role == "user":
            out.append(_user_from_openai(content))
        elif role == "assistant":
            out.append(_assistant_from_openai(message, tool_names))
        elif role == "tool":
            result: JSON = {"role": "tool", "content": content_text(content)}
            if name := tool_names.get(message.get("tool_call_id") or ""):
                result["tool_name"] = name
            out.append(result)
        else:
            raise ProtocolError(f"unsupported message role for Ollama: {role!r}")
    return out


def _user_from_openai(content: Any) -> JSON:
    if not isinstance(content, list):
        return {"role": "user", "content": content_text(content)}
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            data_url = parse_data_url(url) if isinstance(url, str) else None
            if data_url:
                images.append(data_url[1])
            else:
                texts.append(f"[image: {url}]")
        else:
            raise ProtocolError(f"unsupported content part for Ollama: {kind!r}")
    message: JSON = {"role": "user", "content": "\n".join(texts)}
    if images:
        message["images"] = images
    return message


def _assistant_from_openai(message: Mapping[str, Any], tool_names: dict[str, str]) -> JSON:
    out: JSON = {"role": "assistant", "content": content_text(message.get("content"))}
    if reasoning := reasoning_of(message):
        out["thinking"] = reasoning
    if calls := _tool_calls_from_openai(message.get("tool_calls") or []):
        out["tool_calls"] = calls
        tool_names.update({call["id"]: call["function"]["name"] for call in calls})
    return out


def _think_from_openai(body: Mapping[str, Any]) -> bool | str | None:
    """``think`` as given (bool or level), else from ``reasoning_effort`` (a level only gpt-oss takes,
    so any effort other than ``none`` becomes ``true``)."""
    think = body.get("think")
    if isinstance(think, bool | str):
        return think
    effort = body.get("reasoning_effort")
    return effort != "none" if isinstance(effort, str) else None


def _format_from_openai(body: Mapping[str, Any]) -> Any:
    if body.get("format") is not None:
        return body["format"]
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    return None


def _options_from_openai(body: Mapping[str, Any], defaults: Mapping[str, Any] | None) -> JSON:
    options: JSON = dict(defaults or {})
    if isinstance(body.get("options"), dict):
        options.update(body["options"])
    options.update({key: body[key] for key in _SAMPLING if body.get(key) is not None})
    if (max_tokens := max_tokens_of(body)) is not None:
        options["num_predict"] = max_tokens
    if stop := stop_list(body.get("stop")):
        options["stop"] = stop
    return options


def _tool_calls_to_openai(calls: Any) -> list[JSON]:
    """Native tool calls (arguments as an object) as OpenAI ones (arguments as a JSON string)."""
    if calls is not None and not isinstance(calls, list):
        raise ProtocolError("`tool_calls` must be an array of tool calls")
    out = []
    for call in calls or ():
        function = (call.get("function") or {}) if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ProtocolError("each tool call must be an object with a `function` object")
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else dump_json(arguments or {})
        out.append(tool_call(call.get("id") or new_id("call_"), function.get("name", ""), text))
    return out


def _tool_calls_from_openai(calls: list[Any]) -> list[JSON]:
    """OpenAI tool calls as native ones: arguments as an object, the id and position kept."""
    return [
        {
            "id": call.get("id") or new_id("call_"),
            "function": {
                "index": index,
                "name": (call.get("function") or {}).get("name", ""),
                "arguments": parse_arguments((call.get("function") or {}).get("arguments")),
            },
        }
        for index, call in enumerate(calls)
    ]


def _finish_reason(done_reason: Any, has_tool_calls: bool) -> str:
    """Ollama says ``stop`` even when it called tools; OpenAI clients need ``tool_calls`` then."""
    if has_tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def _usage_to_openai(obj: Mapping[str, Any]) -> JSON | None:
    prompt, completion_tokens = obj.get("prompt_eval_count"), obj.get("eval_count")
    if prompt is None and completion_tokens is None:
        return None
    return make_usage(as_count(prompt), as_count(completion_tokens))


def chat_response_to_openai(resp: JSON, *, model: str) -> JSON:
    """A native ``/api/chat`` reply as a ``chat.completion``; tool calls only from ``tool_calls``."""
    raise_for_error(resp)
    message = resp.get("message") or {}
    calls = _tool_calls_to_openai(message.get("tool_calls"))
    return completion(
        id=new_id("chatcmpl-"),
        model=model,
        created=now(),
        message=assistant_message(message.get("content") or "", message.get("thinking") or "", calls),
        finish_reason=_finish_reason(resp.get("done_reason"), bool(calls)),
        usage=_usage_to_openai(resp),
    )


class ChatStreamToOpenAI:
    """Native ``/api/chat`` NDJSON objects → OpenAI chunks (backend direction).

    Ollama sends each tool call whole, so each becomes one complete tool-call piece. An
    ``{"error": ...}`` line raises :class:`UpstreamStreamError`; :meth:`finish` raises
    :class:`ProtocolError` if the stream ended without its ``done: true`` line. ``usage`` is the
    OpenAI usage of the ``done`` line, set even when ``include_usage`` leaves it out of the chunks.
    :meth:`feed_bytes` and :meth:`finish_bytes` take the upstream's bytes and give the chunks as
    OpenAI SSE.
    """

    def __init__(self, include_usage: bool, model: str) -> None:
        self._include_usage = include_usage
        self._make = ChunkMaker(new_id("chatcmpl-"), model, now())
        self._started = False
        self._tool_count = 0
        self._done = False
        self._decoder = NDJSONDecoder()  # for feed_bytes
        self.usage: JSON | None = None

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None:
        for obj in self._decoder.feed(chunk):
            out.append(encode_chunks(self.feed(obj)))

    def finish_bytes(self, out: list[bytes]) -> None:
        for obj in self._decoder.flush():
            out.append(encode_chunks(self.feed(obj)))
        out.append(encode_chunks(self.finish()))

    def feed(self, obj: JSON) -> list[JSON]:
        raise_for_error(obj)
        chunks: list[JSON] = []
        if not self._started:
            self._started = True
            chunks.append(self._make.delta({"role": "assistant", "content": ""}))
        message = obj.get("message") or {}
        if thinking := message.get("thinking"):
            chunks.append(self._make.delta({"reasoning_content": thinking}))
        if content := message.get("content"):
            chunks.append(self._make.delta({"content": content}))
        if calls := _tool_calls_to_openai(message.get("tool_calls")):
            chunks.append(self._make.delta({"tool_calls": [self._piece(call) for call in calls]}))
        if obj.get("done"):
            chunks += self._done_chunks(obj)
        return chunks

    def finish(self) -> list[JSON]:
        if not self._done:
            raise ProtocolError("Ollama stream ended before its final (done) line")
        return []

    def _piece(self, call: JSON) -> JSON:
        piece = {"index": self._tool_count, **call}
        self._tool_count += 1
        return piece

    def _done_chunks(self, obj: Mapping[str, Any]) -> list[JSON]:
        self._done = True
        self.usage = _usage_to_openai(obj) or make_usage(0, 0)
        chunks = [self._make.finish(_finish_reason(obj.get("done_reason"), self._tool_count > 0))]
        if self._include_usage:
            chunks.append(self._make.usage(self.usage))
        return chunks


# ====================================================================================================
# Client direction: an Ollama client's request → internal, and internal answers → Ollama.
# ====================================================================================================


def chat_request_to_openai(body: JSON) -> JSON:
    """A native ``/api/chat`` request as an internal chat-completions request."""
    messages = body.get("messages")
    if not isinstance(messages, list | None):
        raise ProtocolError("`messages` must be an array")
    out: JSON = {"model": body.get("model"), "messages": _messages_to_openai(messages or [])}
    if tools := body.get("tools"):
        out["tools"] = tools
    out.update(_params_to_openai(body))
    return out


def generate_request_to_openai(body: JSON) -> JSON:
    """A native ``/api/generate`` request as a chat request: ``system``, the suffix as an instruction,
    then ``prompt`` (with ``images``) as the user message. ``raw``, ``template`` and ``context`` have no
    chat equivalent and are dropped."""
    messages: list[JSON] = []
    if isinstance(body.get("system"), str) and body["system"]:
        messages.append({"role": "system", "content": body["system"]})
    if isinstance(body.get("suffix"), str) and body["suffix"]:
        messages.append({"role": "system", "content": _SUFFIX_INSTRUCTION + body["suffix"]})
    messages.append(_with_images("user", body.get("prompt") or "", body.get("images")))
    return {"model": body.get("model"), "messages": messages, **_params_to_openai(body)}


def _messages_to_openai(messages: list[Any]) -> list[JSON]:
    pending: list[tuple[str, str]] = []  # (id, name) of tool calls not yet answered
    out: list[JSON] = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            converted, pending = _assistant_to_openai(message)
        elif role == "tool":
            tool_id = _claim(pending, message.get("tool_name") or message.get("name"))
            converted = {"role": "tool", "tool_call_id": tool_id, "content": message.get("content") or ""}
        elif role in ("system", "user"):
            converted = _with_images(role, message.get("content") or "", message.get("images"))
        else:
            raise ProtocolError(f"unsupported message role: {role!r}")
        out.append(converted)
    return out


def _assistant_to_openai(message: Mapping[str, Any]) -> tuple[JSON, list[tuple[str, str]]]:
    calls = _tool_calls_to_openai(message.get("tool_calls"))
    converted = assistant_message(message.get("content") or "", message.get("thinking") or "", calls)
    return converted, [(call["id"], call["function"]["name"]) for call in calls]


def _claim(pending: list[tuple[str, str]], name: Any) -> str:
    """The id of the tool call a tool result answers: the first pending one with its name, else the
    first pending one; a result with no call to answer gets a fresh id."""
    for position, (tool_id, tool_name) in enumerate(pending):
        if tool_name == name:
            del pending[position]
            return tool_id
    return pending.pop(0)[0] if pending else new_id("call_")


def _with_images(role: str, text: str, images: Any) -> JSON:
    if not images:
        return {"role": role, "content": text}
    parts: list[JSON] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": _image_url(image)}} for image in images]
    return {"role": role, "content": parts}


def _image_url(image: str) -> str:
    """Ollama images are bare base64; the media type is sniffed from the encoded magic bytes."""
    if parse_data_url(image):
        return image
    media = next((media for prefix, media in _IMAGE_SIGNATURES if image.startswith(prefix)), "image/jpeg")
    return f"data:{media};base64,{image}"


def _params_to_openai(body: Mapping[str, Any]) -> JSON:
    """Everything but the messages: options, format, think, keep_alive, stream (default true)."""
    out: JSON = {}
    options = dict(body.get("options") or {})
    out.update({key: options.pop(key) for key in _SAMPLING if key in options})
    num_predict = options.pop("num_predict", None)
    if isinstance(num_predict, int) and num_predict > 0:  # -1 and -2 mean "no limit"
        out["max_tokens"] = num_predict
    if (stop := stop_list(options.pop("stop", None))) is not None:
        out["stop"] = stop
    if options:
        out["options"] = options  # num_ctx etc.: only an Ollama backend uses them
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    for key in ("think", "keep_alive"):
        if body.get(key) is not None:
            out[key] = body[key]
    out["stream"] = body.get("stream") is not False
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}  # the final line reports real counts
    return out


_OLLAMA_ONLY = frozenset({"think", "options", "keep_alive"})


def request_for_openai_upstream(body: JSON) -> JSON:
    """An internal request translated from an Ollama client, readied for an OpenAI-compatible upstream.

    :func:`chat_request_to_openai` keeps ``think``, ``options`` (``num_ctx``…) and ``keep_alive`` so
    that an Ollama backend still gets them, but strict OpenAI-compatible APIs (OpenAI itself) refuse
    unknown fields, so they are removed here. ``think`` becomes ``reasoning_effort``, unless the
    request has one: ``true`` is ``medium``, a level (``low``/``medium``/``high``) is kept, and
    ``false`` becomes nothing (OpenAI has no portable "off", and non-reasoning models reject the
    field). The input is not modified.
    """
    out = {key: value for key, value in body.items() if key not in _OLLAMA_ONLY}
    think = body.get("think")
    if "reasoning_effort" not in out and think is not None and think is not False:
        out["reasoning_effort"] = think if think in ("low", "medium", "high") else "medium"
    return out


def _final_fields(finish_reason: Any, prompt: int | None, completion_tokens: int | None) -> JSON:
    """The statistics every final (``done: true``) object carries."""
    return {
        "done": True,
        "done_reason": "length" if finish_reason == "length" else "stop",
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": prompt or 0,
        "prompt_eval_duration": 0,
        "eval_count": completion_tokens or 0,
        "eval_duration": 0,
    }


def chat_response_from_openai(resp: JSON, *, model: str) -> JSON:
    """A ``chat.completion`` as a non-streamed ``/api/chat`` reply."""
    message = first_choice(resp).get("message") or {}
    out: JSON = {"role": "assistant", "content": content_text(message.get("content"), "")}
    if reasoning := reasoning_of(message):
        out["thinking"] = reasoning
    if message.get("tool_calls"):
        out["tool_calls"] = _tool_calls_from_openai(message["tool_calls"])
    return _final_reply(resp, model, {"message": out})


def generate_response_from_openai(resp: JSON, *, model: str) -> JSON:
    """A ``chat.completion`` as a non-streamed ``/api/generate`` reply (tool calls have no place)."""
    message = first_choice(resp).get("message") or {}
    out: JSON = {"response": content_text(message.get("content"), "")}
    if reasoning := reasoning_of(message):
        out["thinking"] = reasoning
    return _final_reply(resp, model, out)


def _final_reply(resp: JSON, model: str, body: JSON) -> JSON:
    finish_reason = first_choice(resp).get("finish_reason")
    return {
        "model": model,
        "created_at": _created_at(),
        **body,
        **_final_fields(finish_reason, *usage_of(resp)),
    }


class _StreamFromOpenAI:
    """Shared state of the chat and generate stream encoders; subclasses only shape the lines.

    :meth:`feed_bytes` and :meth:`finish_bytes` take OpenAI SSE bytes and give the lines as NDJSON.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._tools = ToolCallBuffer()
        self._tools_sent = False
        self._finish_reason: str | None = None
        self._usage = StreamUsage()
        self._done = False
        self._decoder = SSEDecoder()  # for feed_bytes

    def feed(self, chunk: JSON) -> list[JSON]:
        raise_for_error(chunk)
        self._usage.record(chunk)
        parts = delta_parts(first_choice(chunk))
        lines: list[JSON] = []
        if parts.reasoning:
            lines.append(self._line("", thinking=parts.reasoning))
        if parts.content:
            lines.append(self._line(parts.content))
        self._tools.add(parts.tool_calls)
        if parts.finish_reason:
            self._finish_reason = parts.finish_reason
            lines += self._tool_lines()
        return lines

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None:
        self._encode(self._decoder.feed(chunk), out)

    def finish_bytes(self, out: list[bytes]) -> None:
        """The last event too if the stream ended without its blank line (see :meth:`SSEDecoder.flush`)."""
        self._encode(self._decoder.flush(), out)
        out.append(b"".join([encode_line(line) for line in self.finish()]))

    def _encode(self, events: list[SSEEvent], out: list[bytes]) -> None:
        for event in events:
            parsed = parse_stream_event(event)
            if parsed is not None:
                out.append(b"".join([encode_line(line) for line in self.feed(parsed)]))

    def finish(self) -> list[JSON]:
        """The pending tool calls and the final ``done: true`` line, whether or not ``[DONE]`` came."""
        if self._done:
            return []
        self._done = True
        usage = self._usage
        final = {**self._line(""), **_final_fields(self._finish_reason, usage.prompt, usage.completion)}
        return [*self._tool_lines(), final]

    def _tool_lines(self) -> list[JSON]:
        if not self._tools or self._tools_sent:
            return []
        self._tools_sent = True
        return self._tool_call_lines(_tool_calls_from_openai(self._tools.calls()))

    def _line(self, content: str, thinking: str = "") -> JSON:
        raise NotImplementedError

    def _tool_call_lines(self, calls: list[JSON]) -> list[JSON]:
        raise NotImplementedError


class ChatStreamFromOpenAI(_StreamFromOpenAI):
    """Internal (OpenAI) chunks → ``/api/chat`` NDJSON objects (client direction)."""

    def _line(self, content: str, thinking: str = "") -> JSON:
        message: JSON = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        return {"model": self._model, "created_at": _created_at(), "message": message, "done": False}

    def _tool_call_lines(self, calls: list[JSON]) -> list[JSON]:
        line = self._line("")
        line["message"]["tool_calls"] = calls
        return [line]


class GenerateStreamFromOpenAI(_StreamFromOpenAI):
    """Internal (OpenAI) chunks → ``/api/generate`` NDJSON objects (client direction).

    ``/api/generate`` has no tool calls; any the upstream makes are dropped.
    """

    def _line(self, content: str, thinking: str = "") -> JSON:
        line: JSON = {"model": self._model, "created_at": _created_at(), "response": content}
        if thinking:
            line["thinking"] = thinking
        line["done"] = False
        return line

    def _tool_call_lines(self, calls: list[JSON]) -> list[JSON]:
        return []


def error_line(message: str) -> JSON:
    """Ollama's error object: a stream's last line, or a whole error body."""
    return {"error": message}


def error_to_openai(body: Any, status: int = 500) -> JSON:
    """An Ollama error body (``{"error": "text"}``) as the OpenAI error payload."""
    error = body.get("error") if isinstance(body, dict) else None
    return error_payload(str(error if error is not None else body), error_type_for_status(status), None)


# ====================================================================================================
# Model listing endpoints
# ====================================================================================================


def _details(overrides: Mapping[str, Any] | None) -> JSON:
    details: JSON = {
        "parent_model": "",
        "format": "gguf",
        "family": "lm-gateway",
        "families": ["lm-gateway"],
        "parameter_size": "",
        "quantization_level": "auto",
    }
    details.update(overrides or {})
    return details


def _tagged(name: str) -> str:
    """Ollama model names carry a tag; a bare name is ``name:latest``."""
    return name if ":" in name else f"{name}:latest"


def tags_payload(names: list[str], *, details: Mapping[str, Mapping[str, Any]] | None = None) -> JSON:
    """``GET /api/tags``: one virtual model per name (``details`` overrides per name, optional)."""
    modified_at = _created_at()
    return {
        "models": [
            {
                "name": _tagged(name),
                "model": _tagged(name),
                "modified_at": modified_at,
                "size": 0,
                "digest": _ZERO_DIGEST,
                "details": _details((details or {}).get(name)),
            }
            for name in names
        ]
    }


def show_payload(
    name: str, details: Mapping[str, Any] | None, *, capabilities: list[str] | None = None
) -> JSON:
    """``POST /api/show`` for a virtual model; ``capabilities`` default to completion and tools."""
    return {
        "modelfile": f"# lm-gateway virtual model\nFROM {_tagged(name)}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": _details(details),
        "model_info": {"general.architecture": "lm-gateway"},
        "capabilities": capabilities if capabilities is not None else ["completion", "tools"],
        "modified_at": _created_at(),
    }


def version_payload() -> JSON:
    """``GET /api/version``."""
    return {"version": OLLAMA_API_VERSION}


# ====================================================================================================
# The client's request shapes: what an Ollama client is told to fix when it could not be read.
# ====================================================================================================

_IMAGES = Arr(STRING, "an array of base64 strings")
_OPTIONS = Obj({"num_predict": INTEGER, "stop": STRING_OR_STRINGS})
_FORMAT = Either((STRING, OBJECT), '"json" or a JSON schema object')
_COMMON: dict[str, Shape] = {"model": STRING, "options": _OPTIONS, "format": _FORMAT, "stream": BOOLEAN}
_MESSAGES = messages_of(
    {
        "content": STRING,
        "images": _IMAGES,
        "thinking": STRING,
        "tool_name": STRING,
        "tool_calls": Arr(
            Obj(
                {
                    "id": STRING,
                    "function": Obj({"name": STRING, "arguments": Either((OBJECT, STRING), "an object")}),
                },
                ("function",),
                "an object with a 'function' object",
            ),
            "an array of tool calls",
        ),
    }
)
CHAT_REQUEST = Obj({**_COMMON, "messages": _MESSAGES, "tools": TOOLS})
"""An ``/api/chat`` request as :func:`chat_request_to_openai` reads it (:mod:`.shapes`)."""
GENERATE_REQUEST = Obj({**_COMMON, "prompt": STRING, "system": STRING, "suffix": STRING, "images": _IMAGES})
"""An ``/api/generate`` request as :func:`generate_request_to_openai` reads it."""
