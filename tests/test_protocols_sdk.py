"""The official SDKs accept what the translators produce.

The golden suite checks outputs against the wire specs as we read them; these tests close the loop
with the real clients: the bytes we would send (events encoded with :func:`sse.encode_event`, chunks
with :func:`openai.encode_chunk`) are served through an in-memory HTTP transport to the ``anthropic``
and ``openai`` SDKs, whose own SSE parsers and stream accumulators must rebuild the expected message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic as anthropic_sdk
import httpx2
import openai as openai_sdk
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from lm_gateway.protocols import anthropic, ollama, openai, sse

Handler = Callable[[httpx2.Request], httpx2.Response]


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return openai.completion_chunk(
        id="chatcmpl-x", model="up", created=1700000000, delta=delta, finish_reason=finish
    )


def _header(index: int, id: str, name: str) -> dict[str, Any]:
    return {"tool_calls": [openai.tool_call_header(index, id, name)]}


def _fragment(index: int, text: str) -> dict[str, Any]:
    return {"tool_calls": [openai.tool_call_fragment(index, text)]}


UPSTREAM_CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "Two cities, "}),
    _chunk({"reasoning_content": "two calls."}),
    _chunk({"content": "Checking "}),
    _chunk({"content": "both ☀️."}),
    _chunk(_header(0, "call_1", "get_weather")),
    _chunk(_fragment(0, '{"city":')),
    _chunk(_fragment(0, '"Oslo"}')),
    _chunk(_header(1, "call_2", "get_weather")),
    _chunk(_fragment(1, '{"city":"Rome"}')),
    _chunk(finish="tool_calls"),
    openai.completion_chunk(
        id="chatcmpl-x", model="up", created=1700000000, usage=openai.make_usage(40, 25), choices_empty=True
    ),
]


def _anthropic_client(body: bytes, content_type: str) -> anthropic_sdk.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return anthropic_sdk.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _openai_client(body: bytes, content_type: str) -> openai_sdk.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return openai_sdk.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _anthropic_wire(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(sse.encode_event(json.dumps(data), name) for name, data in events)


def _translate_to_anthropic(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    stream = anthropic.StreamFromOpenAI("claude-x")
    events = [event for chunk in chunks for event in stream.feed(chunk)]
    return events + stream.finish()


def test_anthropic_sdk_rebuilds_streamed_message() -> None:
    wire = _anthropic_wire(_translate_to_anthropic(UPSTREAM_CHUNKS))
    client = _anthropic_client(wire, "text/event-stream")
    with client.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(texts) == "Checking both ☀️."
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, first, second = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Two cities, two calls."
    assert text.type == "text" and text.text == "Checking both ☀️."
    assert first.type == "tool_use" and (first.id, first.name, first.input) == (
        "call_1",
        "get_weather",
        {"city": "Oslo"},
    )
    assert second.type == "tool_use" and (second.id, second.input) == ("call_2", {"city": "Rome"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (40, 25)


def test_anthropic_sdk_raises_on_our_error_event() -> None:
    stream = anthropic.StreamFromOpenAI("claude-x")
    events = [*stream.feed(UPSTREAM_CHUNKS[3]), stream.error_event("upstream went away", "api_error")]
    client = _anthropic_client(_anthropic_wire(events), "text/event-stream")
    messages: Any = [{"role": "user", "content": "x"}]
    with (
        pytest.raises(anthropic_sdk.APIStatusError, match="upstream went away"),
        client.messages.stream(model="claude-x", max_tokens=10, messages=messages) as reading,
    ):
        reading.get_final_message()


def test_anthropic_sdk_parses_whole_message() -> None:
    acc = openai.StreamAccumulator()
    for chunk in UPSTREAM_CHUNKS:
        acc.add(chunk)
    body = anthropic.response_from_openai(acc.result(), model="claude-x")
    client = _anthropic_client(json.dumps(body).encode(), "application/json")
    message = client.messages.create(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use"


def _block(kind: str, index: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    return (kind, {"type": kind, "index": index, **fields})


_START_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [],
    "model": "claude-x",
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 1},
}
ANTHROPIC_EVENTS = [
    ("message_start", {"type": "message_start", "message": _START_MESSAGE}),
    _block("content_block_start", 0, content_block={"type": "text", "text": ""}),
    _block("content_block_delta", 0, delta={"type": "text_delta", "text": "Sure. "}),
    _block("content_block_stop", 0),
    _block(
        "content_block_start",
        1,
        content_block={"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ),
    _block("content_block_delta", 1, delta={"type": "input_json_delta", "partial_json": '{"q": "naïve'}),
    _block("content_block_delta", 1, delta={"type": "input_json_delta", "partial_json": ' café"}'}),
    _block("content_block_stop", 1),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def _openai_wire_from_anthropic(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Anthropic upstream bytes → decoder → translator → the SSE bytes we send an OpenAI client."""
    decoder = sse.SSEDecoder()
    stream = anthropic.StreamToOpenAI(include_usage=True, model="tier-x")
    out = b""
    for byte in _anthropic_wire(events):  # one byte at a time: the worst split
        for event in decoder.feed(bytes([byte])):
            out += b"".join(openai.encode_chunk(chunk) for chunk in stream.feed(event))
    for event in decoder.flush():
        out += b"".join(openai.encode_chunk(chunk) for chunk in stream.feed(event))
    return out + b"".join(openai.encode_chunk(chunk) for chunk in stream.finish()) + openai.DONE


def test_openai_sdk_rebuilds_stream_translated_from_anthropic() -> None:
    client = _openai_client(_openai_wire_from_anthropic(ANTHROPIC_EVENTS), "text/event-stream")
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks = client.chat.completions.create(
        model="tier-x",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Sure. "
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_1",
        "f",
        {"q": "naïve café"},
    )
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 9)


WHOLE_RESPONSES = [
    anthropic.response_to_openai(
        {
            "id": "msg_1",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 2},
        },
        model="tier-x",
    ),
    ollama.chat_response_to_openai(
        {
            "model": "q",
            "message": {"role": "assistant", "content": "hi", "thinking": "t"},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 3,
            "eval_count": 4,
        },
        model="tier-x",
    ),
]


@pytest.mark.parametrize("body", WHOLE_RESPONSES)
def test_openai_sdk_parses_translated_whole_responses(body: dict[str, Any]) -> None:
    client = _openai_client(json.dumps(body).encode(), "application/json")
    completion = client.chat.completions.create(model="tier-x", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].finish_reason in ("stop", "tool_calls")
    assert completion.usage is not None and completion.usage.total_tokens > 0
