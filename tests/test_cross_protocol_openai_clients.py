"""The official ``openai`` SDK served by an Anthropic or a native Ollama backend, over real sockets.

Each test runs against both translated backends (``an`` = Anthropic Messages, ``ol`` = Ollama
``/api/chat``) and checks both sides: what the SDK rebuilt and what the upstream received.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from .conftest import StartGateway
from .cross_protocol import (
    ENV,
    SUNNY,
    WEATHER_PARAMS,
    WEATHER_TOOL_OPENAI,
    Fakes,
    after_two_deltas,
    fakes_fixture,
)
from .fakes import (
    LENGTH,
    CutStream,
    Reply,
    Status,
    Stream,
    StreamError,
    ToolCall,
    Usage,
    Wire,
)
from .gateway import RunningGateway

TRANSLATED = ["an", "ol"]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def extra(obj: Any, name: str) -> Any:
    """A field the SDK's models do not declare (``reasoning_content``), kept as an extra."""
    return (obj.model_extra or {}).get(name)


@pytest.mark.parametrize("tier", TRANSLATED)
def test_plain_answer_usage_and_routing_headers(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fake = fakes.by_tier(tier)
    fake.script(Reply(text="Sunny, 24°C.", usage=Usage(input_tokens=11, output_tokens=3)))
    raw = sdk(gw).chat.completions.with_raw_response.create(model=tier, messages=USER)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Sunny, 24°C."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 3)
    assert raw.headers["x-lmg-tier"] == tier
    assert fake.last_request.model == {"an": "claude-up", "ol": "llama-up"}[tier]
    entry = gw.traffic()[0]
    assert (entry["status"], entry["tier"], entry["endpoint"]) == (200, tier, "/v1/chat/completions")
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (11, 3)


def test_anthropic_upstream_gets_the_gateway_key_version_and_max_tokens(
    gw: RunningGateway, fakes: Fakes
) -> None:
    sdk(gw).chat.completions.create(model="an", messages=USER, max_completion_tokens=77)
    sent = fakes.anthropic.last_request
    assert sent.path == "/v1/messages"
    assert sent.header("x-api-key") == "sk-ant-gateway-held-key" and sent.header("anthropic-version")
    assert sent.json["max_tokens"] == 77
    # Without a cap from the client, Anthropic's required max_tokens still gets a value.
    sdk(gw).chat.completions.create(model="an", messages=USER)
    assert isinstance(fakes.anthropic.last_request.json["max_tokens"], int)


def test_system_prompt_and_turns_reach_anthropic_in_its_shape(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).chat.completions.create(
        model="an",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Weather?"},
        ],
    )
    sent = fakes.anthropic.last_request.json
    assert sent["system"] == "Be terse."
    assert sent["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Weather?"},
    ]


def test_system_prompt_and_turns_reach_ollama_in_its_shape(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).chat.completions.create(
        model="ol",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Weather?"},
        ],
        temperature=0.3,
        max_tokens=50,
    )
    sent = fakes.ollama.last_request.json
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "Be terse."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "Weather?"),
    ]
    assert sent["options"]["temperature"] == 0.3 and sent["options"]["num_predict"] == 50
    assert sent["stream"] is False


@pytest.mark.parametrize("tier", TRANSLATED)
def test_stream_is_reassembled_and_its_usage_recorded(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Stream(chunks=["Sun", "ny, ", "24°C ✓"], usage=Usage(9, 4)))
    stream = sdk(gw).chat.completions.create(
        model=tier, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "Sunny, 24°C ✓"
    assert finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (9, 4)
    entry = gw.traffic()[0]
    assert entry["stream"] is True and entry["status"] == 200 and entry["error"] is None
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (9, 4)


@pytest.mark.parametrize("tier", TRANSLATED)
def test_usage_is_recorded_even_when_the_client_did_not_ask_for_it(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Stream(chunks=["a", "b"], usage=Usage(5, 2)))
    chunks = list(sdk(gw).chat.completions.create(model=tier, messages=USER, stream=True))
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: no usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ab"
    entry = gw.traffic()[0]
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (5, 2)


@pytest.mark.parametrize("tier", TRANSLATED)
def test_single_tool_call_comes_back_as_an_openai_tool_call(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    answer = sdk(gw).chat.completions.create(model=tier, messages=USER, tools=[WEATHER_TOOL_OPENAI])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    sent = fakes.by_tier(tier).last_request.json
    if tier == "an":
        assert sent["tools"] == [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": WEATHER_PARAMS,
            }
        ]
    else:
        assert sent["tools"] == [WEATHER_TOOL_OPENAI]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_streamed_parallel_tool_calls_are_reassembled_by_the_sdk(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    calls = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Oslo"})]
    fakes.by_tier(tier).script(Reply(text="Checking both.", tool_calls=calls))
    with sdk(gw).chat.completions.stream(model=tier, messages=USER, tools=[WEATHER_TOOL_OPENAI]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    got = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
    assert got == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    ids = [c.id for c in choice.message.tool_calls or []]
    assert all(ids) and len(set(ids)) == 2


def test_tool_results_go_back_to_anthropic_as_tool_result_blocks(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).chat.completions.create(
        model="an",
        tools=[WEATHER_TOOL_OPENAI],
        messages=[
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "24°C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "3°C"},
        ],
    )
    turns = fakes.anthropic.last_request.json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "24°C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "3°C"},
    ]


def test_tool_results_go_back_to_ollama_as_named_tool_messages(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).chat.completions.create(
        model="ol",
        tools=[WEATHER_TOOL_OPENAI],
        messages=[
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "24°C"},
        ],
    )
    messages = fakes.ollama.last_request.json["messages"]
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}  # an object
    assert messages[2] == {"role": "tool", "content": "24°C", "tool_name": "get_weather"}


@pytest.mark.parametrize("tier", TRANSLATED)
def test_image_parts_reach_the_upstream_in_its_own_form(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    sdk(gw).chat.completions.create(
        model=tier,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    user = fakes.by_tier(tier).last_request.json["messages"][-1]
    if tier == "an":
        assert user["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ]
    else:
        assert user == {"role": "user", "content": "What is this?", "images": [PNG]}


def test_tool_choice_reaches_anthropic_in_its_shape(gw: RunningGateway, fakes: Fakes) -> None:
    client = sdk(gw)
    client.chat.completions.create(
        model="an", messages=USER, tools=[WEATHER_TOOL_OPENAI], tool_choice="required"
    )
    assert fakes.anthropic.last_request.json["tool_choice"] == {"type": "any"}
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    client.chat.completions.create(
        model="an", messages=USER, tools=[WEATHER_TOOL_OPENAI], tool_choice=named, parallel_tool_calls=False
    )
    assert fakes.anthropic.last_request.json["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


@pytest.mark.parametrize("tier", TRANSLATED)
def test_reasoning_effort_turns_thinking_on_and_comes_back_as_reasoning_content(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fake = fakes.by_tier(tier)
    fake.script(Reply(text="Sunny.", thinking="Paris is in France."))
    answer = sdk(gw).chat.completions.create(model=tier, messages=USER, reasoning_effort="low")
    assert answer.choices[0].message.content == "Sunny."
    assert extra(answer.choices[0].message, "reasoning_content") == "Paris is in France."
    sent = fake.last_request.json
    if tier == "an":
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    else:
        assert sent["think"] is True

    fake.script(Reply(text="Sunny.", thinking="Paris is in France."))
    stream = sdk(gw).chat.completions.create(model=tier, messages=USER, reasoning_effort="low", stream=True)
    reasoning, content = [], []
    for chunk in stream:
        if chunk.choices:
            reasoning.append(extra(chunk.choices[0].delta, "reasoning_content") or "")
            content.append(chunk.choices[0].delta.content or "")
    assert "".join(reasoning) == "Paris is in France."
    assert "".join(content) == "Sunny."


@pytest.mark.parametrize("tier", TRANSLATED)
def test_a_length_stop_is_reported_as_length(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fake = fakes.by_tier(tier)
    fake.script(Reply(text="cut", finish_reason=LENGTH), Reply(text="cut", finish_reason=LENGTH))
    client = sdk(gw)
    assert client.chat.completions.create(model=tier, messages=USER).choices[0].finish_reason == "length"
    finishes = [
        c.choices[0].finish_reason
        for c in client.chat.completions.create(model=tier, messages=USER, stream=True)
        if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_before_the_answer_is_an_openai_429(
    gw: RunningGateway, fakes: Fakes, tier: str, stream: bool
) -> None:
    fakes.by_tier(tier).script(Status(429, headers={"Retry-After": "7"}, message="slow down"))
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(gw).chat.completions.create(model=tier, messages=USER, stream=stream)
    assert caught.value.response.headers["retry-after"] == "7"
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "backend_rate_limited" and "slow down" in error["message"]
    entry = gw.traffic()[0]
    assert entry["status"] == 429 and "slow down" in entry["error"]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_upstream_refusing_the_request_is_a_400_with_its_reason(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Status(400, message="prompt is too long"))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model=tier, messages=USER)
    assert "prompt is too long" in str(caught.value)


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("cut", [False, True], ids=["error-event", "connection-cut"])
def test_a_stream_failing_midway_raises_in_the_sdk_after_what_was_sent(
    gw: RunningGateway, fakes: Fakes, tier: str, cut: bool
) -> None:
    after, reply = after_two_deltas(tier), Stream(chunks=SUNNY)
    fault = CutStream(after, reply) if cut else StreamError(after, "model crashed", reply=reply)
    fakes.by_tier(tier).script(fault)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk(gw).chat.completions.create(model=tier, messages=USER, stream=True):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Sunny"
    if not cut:
        assert "model crashed" in caught.value.message
    entry = gw.traffic()[0]
    assert entry["error"] and entry["stream"] is True


def test_the_mid_stream_error_event_is_in_the_openai_shape(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.anthropic.script(StreamError(after=2, message="Overloaded", error_type="overloaded_error"))
    body = {"model": "an", "messages": USER, "stream": True}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    error = json.loads(events[-1])["error"]
    assert error["code"] == "backend_stream_error" and "Overloaded" in error["message"]
    assert "[DONE]" not in resp.text


def test_key_bound_client_is_refused_another_profile_in_the_openai_shape(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    clients = '\n[[clients]]\nkey_env = "HOME_KEY"\nprofile = "default"\n'
    gw = start_gateway(fakes.config(extra=clients), env={**ENV, "HOME_KEY": "home-key"})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="home-key", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="auto", messages=USER)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "profile_not_allowed"
    assert client.chat.completions.create(model="default", messages=USER).choices[0].message.content
    assert fakes.anthropic.requests_to("/v1/messages") == []


@pytest.fixture(scope="module")
def awkward() -> Iterator[Fakes]:
    yield from fakes_fixture(Wire(crlf=True, split_every=3))


@pytest.mark.parametrize("tier", TRANSLATED)
def test_crlf_and_three_byte_writes_from_the_upstream_change_nothing(
    start_gateway: StartGateway, awkward: Fakes, tier: str
) -> None:
    awkward.reset()
    gw = start_gateway(awkward.config(), env=ENV)
    fake = awkward.by_tier(tier)
    calls = [ToolCall("get_weather", {"city": "Zürich"}), ToolCall("get_weather", {"city": "東京"})]
    fake.script(Reply(text="Één moment ☕", tool_calls=calls, usage=Usage(6, 5)))
    with sdk(gw).chat.completions.stream(model=tier, messages=USER, tools=[WEATHER_TOOL_OPENAI]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Één moment ☕"
    args = [json.loads(c.function.arguments) for c in message.tool_calls or []]
    assert args == [{"city": "Zürich"}, {"city": "東京"}]
    entry = gw.traffic()[0]
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (6, 5)
    fake.script(Reply(text="Één moment ☕"))
    assert sdk(gw).chat.completions.create(model=tier, messages=USER).choices[0].message.content == (
        "Één moment ☕"
    )
