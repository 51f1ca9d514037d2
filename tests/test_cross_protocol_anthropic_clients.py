"""The official ``anthropic`` SDK (as Claude Code uses it) served by an OpenAI-compatible or a native
Ollama backend, over real sockets: ``messages.create`` and ``messages.stream``, tools, thinking,
images, errors in Anthropic's shape, ``count_tokens``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from .conftest import StartGateway
from .cross_protocol import (
    ENV,
    SUNNY,
    WEATHER_TOOL_ANTHROPIC,
    WEATHER_TOOL_OPENAI,
    Fakes,
    after_two_deltas,
    fakes_fixture,
)
from .fakes import LENGTH, CutStream, Reply, Status, Stream, StreamError, ToolCall, Usage, Wire
from .gateway import RunningGateway

TRANSLATED = ["oa", "ol"]
USER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def sdk(gw: RunningGateway, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def sent_messages(fakes: Fakes, tier: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fakes.by_tier(tier).last_request.json["messages"]
    return messages


@pytest.mark.parametrize("tier", TRANSLATED)
def test_create_returns_a_message_with_usage_and_the_requested_model(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Reply(text="Sunny, 24°C.", usage=Usage(input_tokens=12, output_tokens=3)))
    raw = sdk(gw).messages.with_raw_response.create(model=tier, max_tokens=100, messages=USER)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == tier  # the client's own model name, not the upstream's
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Sunny, 24°C.")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    assert raw.headers["x-lmg-tier"] == tier
    sent = fakes.by_tier(tier).last_request
    assert sent.model == {"oa": "gpt-up", "ol": "llama-up"}[tier]
    assert sent.api_key is None  # the client's key never goes upstream
    entry = gw.traffic()[0]
    assert (entry["status"], entry["endpoint"], entry["tier"]) == (200, "/v1/messages", tier)
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (12, 3)


def test_max_tokens_and_sampling_reach_the_openai_upstream(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).messages.create(
        model="oa",
        max_tokens=321,
        stop_sequences=["END"],
        messages=USER,
        extra_body={"temperature": 0.2, "top_p": 0.9},  # this SDK version has no keyword for them
    )
    sent = fakes.openai.last_request.json
    assert sent["max_tokens"] == 321 and sent["stop"] == ["END"]
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9


@pytest.mark.parametrize("tier", TRANSLATED)
def test_system_blocks_and_turns_reach_the_upstream_as_messages(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    sdk(gw).messages.create(
        model=tier,
        max_tokens=100,
        system=[{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Use metric."}],
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": "Weather?"},
        ],
    )
    got = [(m["role"], m["content"]) for m in sent_messages(fakes, tier)]
    assert got == [
        ("system", "Be terse.\n\nUse metric."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "Weather?"),
    ]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_stream_text_and_final_message_usage(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Stream(chunks=["Sun", "ny, ", "24°C ✓"], usage=Usage(8, 4)))
    with sdk(gw).messages.stream(model=tier, max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Sunny, 24°C ✓"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 4)
    entry = gw.traffic()[0]
    assert entry["stream"] is True and entry["status"] == 200 and entry["error"] is None
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (8, 4)


@pytest.mark.parametrize("tier", TRANSLATED)
def test_tool_use_comes_back_as_tool_use_blocks(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    message = sdk(gw).messages.create(
        model=tier,
        max_tokens=100,
        messages=USER,
        tools=[WEATHER_TOOL_ANTHROPIC],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in blocks] == [("get_weather", {"city": "Paris"})]
    assert blocks[0].id
    sent = fakes.by_tier(tier).last_request.json
    assert sent["tools"] == [WEATHER_TOOL_OPENAI]
    if tier == "oa":  # Ollama has no tool_choice
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("tier", TRANSLATED)
def test_streamed_parallel_tool_use_is_reassembled_by_the_sdk(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    calls = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Oslo"})]
    fakes.by_tier(tier).script(Reply(text="Checking both.", tool_calls=calls))
    with sdk(gw).messages.stream(
        model=tier, max_tokens=100, messages=USER, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking both."  # type: ignore[union-attr]
    tools = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert tools == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    ids = [b.id for b in final.content if b.type == "tool_use"]
    assert all(ids) and len(set(ids)) == 2


TOOL_TURNS: list[Any] = [
    *USER,
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "24°C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "3°C"}]},
            {"type": "text", "text": "And tomorrow?"},
        ],
    },
]


def test_tool_results_go_to_openai_as_tool_messages_with_their_ids(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).messages.create(model="oa", max_tokens=100, messages=TOOL_TURNS, tools=[WEATHER_TOOL_ANTHROPIC])
    messages = sent_messages(fakes, "oa")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    calls = messages[1]["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}),
        ("toolu_2", "get_weather", {"city": "Oslo"}),
    ]
    assert messages[1]["content"] == "Checking."
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "24°C"}
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": "3°C"}
    assert messages[4] == {"role": "user", "content": "And tomorrow?"}


def test_tool_results_go_to_ollama_as_named_tool_messages(gw: RunningGateway, fakes: Fakes) -> None:
    sdk(gw).messages.create(model="ol", max_tokens=100, messages=TOOL_TURNS, tools=[WEATHER_TOOL_ANTHROPIC])
    messages = sent_messages(fakes, "ol")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert [c["function"]["arguments"] for c in messages[1]["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert [(m.get("tool_name"), m["content"]) for m in messages[2:4]] == [
        ("get_weather", "24°C"),
        ("get_weather", "3°C"),
    ]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_images_reach_the_upstream_in_its_own_form(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    sdk(gw).messages.create(
        model=tier,
        max_tokens=100,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}],
    )
    user = sent_messages(fakes, tier)[-1]
    if tier == "oa":
        assert user["content"] == [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "text", "text": "What is this?"},
        ]
    else:
        assert user["content"] == "What is this?" and user["images"] == [PNG]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_thinking_is_requested_upstream_and_returned_as_a_thinking_block(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fake = fakes.by_tier(tier)
    fake.script(Reply(text="Sunny.", thinking="Paris is in France."))
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    message = sdk(gw).messages.create(model=tier, max_tokens=4000, messages=USER, thinking=thinking)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Paris is in France."  # type: ignore[union-attr]
    sent = fake.last_request.json
    assert sent.get("reasoning_effort") == "low" if tier == "oa" else sent["think"] is True

    fake.script(Reply(text="Sunny.", thinking="Paris is in France."))
    with sdk(gw).messages.stream(model=tier, max_tokens=4000, messages=USER, thinking=thinking) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Paris is in France."  # type: ignore[union-attr]
    assert final.content[1].text == "Sunny."  # type: ignore[union-attr]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_a_length_stop_is_max_tokens(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(
        Reply(text="cut", finish_reason=LENGTH), Reply(text="cut", finish_reason=LENGTH)
    )
    client = sdk(gw)
    assert client.messages.create(model=tier, max_tokens=5, messages=USER).stop_reason == "max_tokens"
    with client.messages.stream(model=tier, max_tokens=5, messages=USER) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_is_an_anthropic_429(
    gw: RunningGateway, fakes: Fakes, tier: str, stream: bool
) -> None:
    fakes.by_tier(tier).script(Status(429, headers={"Retry-After": "7"}, message="slow down"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        if stream:
            with sdk(gw).messages.stream(model=tier, max_tokens=10, messages=USER) as events:
                events.get_final_message()
        else:
            sdk(gw).messages.create(model=tier, max_tokens=10, messages=USER)
    assert caught.value.response.headers["retry-after"] == "7"
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error" and "slow down" in body["error"]["message"]
    assert gw.traffic()[0]["status"] == 429


def test_an_unreachable_upstream_is_an_anthropic_api_error(start_gateway: StartGateway, fakes: Fakes) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config().replace(fakes.openai.url, "http://127.0.0.1:9"), env=ENV)
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(gw).messages.create(model="oa", max_tokens=10, messages=USER)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "api_error"
    assert "unreachable" in body["error"]["message"]


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("cut", [False, True], ids=["error-event", "connection-cut"])
def test_a_stream_failing_midway_raises_in_the_sdk_after_what_was_sent(
    gw: RunningGateway, fakes: Fakes, tier: str, cut: bool
) -> None:
    after, reply = after_two_deltas(tier), Stream(chunks=SUNNY)
    fault = CutStream(after, reply) if cut else StreamError(after, "model crashed", reply=reply)
    fakes.by_tier(tier).script(fault)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk(gw).messages.stream(model=tier, max_tokens=100, messages=USER) as stream,
    ):
        received.extend(stream.text_stream)
    assert "".join(received) == "Sunny"
    if not cut:
        assert "model crashed" in str(caught.value)
    entry = gw.traffic()[0]
    assert entry["error"] and entry["stream"] is True


def test_the_mid_stream_error_is_an_anthropic_error_event(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.openai.script(StreamError(after=2, message="Overloaded"))
    body = {"model": "oa", "max_tokens": 10, "messages": USER, "stream": True}
    resp = httpx.post(gw.url + "/v1/messages", json=body, timeout=10)
    assert resp.status_code == 200
    tail = resp.text.rstrip("\n").split("\n\n")[-1].splitlines()
    assert tail[0] == "event: error"
    error = json.loads(tail[1].removeprefix("data: "))
    assert error["type"] == "error" and "Overloaded" in error["error"]["message"]
    assert "message_stop" not in resp.text


def test_unknown_model_and_bad_requests_get_anthropic_error_bodies(gw: RunningGateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk(gw).messages.create(model="claude-nonexistent", max_tokens=10, messages=USER)
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
    assert "oa" in body["error"]["message"]
    for bad in ({"model": "oa", "max_tokens": 5}, {"model": "oa", "messages": [{"role": "robot"}]}, []):
        resp = httpx.post(gw.url + "/v1/messages", json=bad)
        assert resp.status_code == 400, resp.text
        assert resp.json()["type"] == "error"
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert resp.headers.get_list("content-type") == ["application/json"]


def test_a_request_only_anthropic_can_serve_is_a_clear_400_on_other_tiers(
    gw: RunningGateway, fakes: Fakes
) -> None:
    body = {
        "model": "oa",
        "max_tokens": 100,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": USER,
    }
    resp = httpx.post(gw.url + "/v1/messages", json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "not an Anthropic backend" in error["message"] and "web_search" in error["message"]
    assert fakes.openai.requests == []
    assert gw.traffic()[0]["status"] == 400


def test_count_tokens_gives_an_estimate_without_calling_a_backend(gw: RunningGateway, fakes: Fakes) -> None:
    client = sdk(gw)
    short = client.messages.count_tokens(model="oa", messages=USER)
    longer = client.messages.count_tokens(
        model="oa", messages=USER, system="Be terse. " * 50, tools=[WEATHER_TOOL_ANTHROPIC]
    )
    assert 0 < short.input_tokens < longer.input_tokens
    assert fakes.openai.requests == []


def test_key_bound_client_is_refused_another_profile_in_the_anthropic_shape(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    clients = '\n[[clients]]\nkey_env = "CODE_KEY"\nprofile = "default"\n'
    gw = start_gateway(fakes.config(extra=clients), env={**ENV, "CODE_KEY": "code-key"})
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        sdk(gw, "code-key").messages.create(model="auto", max_tokens=10, messages=USER)
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "permission_error"
    assert "auto" in body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as denied:
        sdk(gw, "wrong-key").messages.create(model="ol", max_tokens=10, messages=USER)
    assert (
        isinstance(denied.value.body, dict) and denied.value.body["error"]["type"] == "authentication_error"
    )
    # The x-api-key header (what Claude Code sends) is accepted as the client key too.
    resp = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "ol", "max_tokens": 10, "messages": USER},
        headers={"x-api-key": "code-key", "anthropic-version": "2023-06-01"},
    )
    assert resp.status_code == 200 and resp.json()["type"] == "message"


@pytest.fixture(scope="module")
def awkward() -> Iterator[Fakes]:
    yield from fakes_fixture(Wire(crlf=True, split_every=3))


@pytest.mark.parametrize("tier", TRANSLATED)
def test_crlf_and_three_byte_writes_from_the_upstream_change_nothing(
    start_gateway: StartGateway, awkward: Fakes, tier: str
) -> None:
    awkward.reset()
    gw = start_gateway(awkward.config(), env=ENV)
    calls = [ToolCall("get_weather", {"city": "Zürich"}), ToolCall("get_weather", {"city": "東京"})]
    awkward.by_tier(tier).script(Reply(text="Één moment ☕", tool_calls=calls, usage=Usage(6, 5)))
    with sdk(gw).messages.stream(
        model=tier, max_tokens=100, messages=USER, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Één moment ☕"  # type: ignore[union-attr]
    assert [b.input for b in final.content if b.type == "tool_use"] == [{"city": "Zürich"}, {"city": "東京"}]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 5)
