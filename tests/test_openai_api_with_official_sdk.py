"""The official ``openai`` SDK (sync and async, streaming and not) works against the gateway, and the
gateway forwards requests untouched except for ``model``."""

from __future__ import annotations

import openai
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Stream, ToolCall, Usage
from .gateway import RunningGateway, openai_backend_config


@pytest.fixture
def gw(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    return start_gateway(openai_backend_config(fake.url))


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="not-needed", max_retries=0)


def test_sync_completion_is_routed_by_alias_and_model_is_rewritten(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(Reply(text="the answer", usage=Usage(input_tokens=7, output_tokens=3)))
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="hint:fast", messages=[{"role": "user", "content": "question"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "the answer"
    assert completion.usage is not None and completion.usage.prompt_tokens == 7
    assert fake.last_request.model == "fast-model"
    assert raw.headers["x-lmg-tier"] == "local:fast"
    assert raw.headers["x-lmg-model"] == "fast-model"
    assert raw.headers["x-lmg-profile"] == "default"
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-lmg-overhead-ms"]) >= 0
    entry = gw.traffic()[0]
    assert (entry["tier"], entry["backend"], entry["status"]) == ("local:fast", "mock", 200)
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (7, 3)


def test_every_request_field_except_model_reaches_the_backend_untouched(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    sdk(gw).chat.completions.create(
        model="cloud:economy",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "content": "hi"},
        ],
        temperature=0.25,
        top_p=0.5,
        max_tokens=17,
        stop=["\n\n"],
        seed=42,
        tools=tools,
        tool_choice="auto",
        user="u-1",
        extra_body={"vendor_extension": {"nested": [1, 2, 3]}},
    )
    sent = fake.last_request.json
    assert sent["model"] == "economy-model"
    assert sent["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    assert sent["temperature"] == 0.25 and sent["top_p"] == 0.5 and sent["max_tokens"] == 17
    assert sent["stop"] == ["\n\n"] and sent["seed"] == 42 and sent["user"] == "u-1"
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["vendor_extension"] == {"nested": [1, 2, 3]}


def test_sync_stream_is_reassembled_by_the_sdk(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Stream(chunks=["Hel", "lo, ", "wörld ✓"]))
    stream = sdk(gw).chat.completions.create(
        model="hint:fast",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "Hello, wörld ✓"
    assert usage is not None and usage.completion_tokens > 0
    entry = gw.traffic()[0]
    assert entry["stream"] is True and entry["status"] == 200 and entry["error"] is None
    assert entry["completion_tokens"] == usage.completion_tokens
    assert entry["ttfb_ms"] is not None


def test_streamed_tool_calls_are_reassembled_by_the_sdk(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="", tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("noop", {})]))
    stream = sdk(gw).chat.completions.create(
        model="hint:fast", messages=[{"role": "user", "content": "weather?"}], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    assert calls == {
        0: {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        1: {"name": "noop", "arguments": "{}"},
    }


async def test_async_client_completion_and_stream(gw: RunningGateway, fake: OpenAIBackend) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    fake.script(Reply(text="async answer"), Stream(chunks=["a", "b", "c"]))
    completion = await client.chat.completions.create(
        model="hint:fast", messages=[{"role": "user", "content": "q"}]
    )
    assert completion.choices[0].message.content == "async answer"
    stream = await client.chat.completions.create(
        model="hint:fast", messages=[{"role": "user", "content": "q"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "abc"
    await client.close()


def test_models_lists_tiers_aliases_and_profiles(gw: RunningGateway) -> None:
    models = {m.id: m for m in sdk(gw).models.list().data}
    assert {"local:fast", "cloud:economy", "hint:fast", "hint:cloud", "default"} <= set(models)
    assert models["local:fast"].owned_by == "mock"
    assert models["hint:fast"].owned_by == "alias"
    assert isinstance(models["hint:fast"].created, int)


def test_unknown_model_is_a_404_listing_valid_names(gw: RunningGateway, fake: OpenAIBackend) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gw).chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "q"}])
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert "hint:fast" in error["message"] and "local:fast" in error["message"]
    assert fake.requests_to("/v1/chat/completions") == []
    assert gw.traffic()[0]["status"] == 404


def test_profile_can_fall_back_for_unknown_models_when_it_opts_in(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url).replace(
        'classifier = "local:fast"', 'classifier = "local:fast"\nunknown_model_fallback = true'
    )
    gw = start_gateway(body)
    sdk(gw).chat.completions.create(model="gpt-whatever", messages=[{"role": "user", "content": "q"}])
    assert fake.last_request.model == "fast-model"


def test_profile_system_prompt_is_injected_keeping_array_system_content(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url).replace(
        'classifier = "local:fast"', 'classifier = "local:fast"\nsystem_prompt = "Be brief."'
    )
    gw = start_gateway(body)
    client = sdk(gw)
    client.chat.completions.create(model="hint:fast", messages=[{"role": "user", "content": "q"}])
    assert fake.last_request.json["messages"][0] == {"role": "system", "content": "Be brief."}
    client.chat.completions.create(
        model="hint:fast",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Mine."}]},
            {"role": "user", "content": "q"},
        ],
    )
    assert fake.last_request.json["messages"][0]["content"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Mine."},
    ]


def test_expert_gate_requires_the_header_above_the_ceiling(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url).replace(
        'classifier = "local:fast"',
        'classifier = "local:fast"\nmax_auto_tier = "local:fast"\nexpert_requires_flag = true',
    )
    gw = start_gateway(body)
    client = sdk(gw)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="hint:cloud", messages=[{"role": "user", "content": "q"}])
    assert "X-LMG-Expert" in str(caught.value)
    ok = client.chat.completions.create(
        model="hint:cloud",
        messages=[{"role": "user", "content": "q"}],
        extra_headers={"X-LMG-Expert": "true"},
    )
    assert ok.choices[0].message.content
    assert fake.last_request.model == "economy-model"


def test_reply_profile_answers_its_fixed_message_without_a_backend(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = (
        openai_backend_config(fake.url)
        + '\n[profiles.closed]\nmode = "reply"\nreply_message = "We are closed."\n'
    )
    gw = start_gateway(body)
    client = sdk(gw)
    raw = client.chat.completions.with_raw_response.create(
        model="closed", messages=[{"role": "user", "content": "q"}]
    )
    assert raw.parse().choices[0].message.content == "We are closed."
    assert raw.headers["x-lmg-tier"] == "reply"
    stream = client.chat.completions.create(
        model="closed", messages=[{"role": "user", "content": "q"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "We are closed."
    assert fake.requests_to("/v1/chat/completions") == []
    assert [e["mode"] for e in gw.traffic()] == ["reply", "reply"]
