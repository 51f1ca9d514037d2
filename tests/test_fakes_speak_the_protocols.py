"""The fake backends speak each wire format well enough for the official clients, and misbehave on cue.

Every other socket-level test trusts these fakes, so this checks them against the real parsers: the
``openai`` and ``anthropic`` SDKs talk to the OpenAI and Anthropic fakes directly (no gateway), and
Ollama's NDJSON is read line by line with aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from .fakes import (
    HTML,
    AnthropicBackend,
    CutStream,
    Drop,
    EmptyBody,
    Garbage,
    Hang,
    InvalidUTF8,
    NeverEndingStream,
    OllamaBackend,
    OpenAIBackend,
    Outcome,
    Reply,
    ServerThread,
    Slow,
    Status,
    Stream,
    StreamError,
    ToolCall,
    Usage,
    Wire,
    run_in_thread,
)
from .fakes.base import embedding

USER: list[dict[str, Any]] = [{"role": "user", "content": "héllo wörld ✓"}]
OAI_USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "héllo wörld ✓"}]
ANT_USER: list[MessageParam] = [{"role": "user", "content": "héllo wörld ✓"}]
WEATHER = ToolCall("get_weather", {"city": "Paris", "unit": "°C"})


@pytest.fixture
def oai() -> Iterator[OpenAIBackend]:
    with OpenAIBackend(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
def claude() -> Iterator[AnthropicBackend]:
    with AnthropicBackend() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def openai_sdk(fake: OpenAIBackend | OllamaBackend, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fake.url}/v1", api_key=key, max_retries=0, timeout=5)


def anthropic_sdk(fake: AnthropicBackend) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="ak-test", max_retries=0, timeout=5)


# --- OpenAI ----------------------------------------------------------------------------------------


def test_openai_sdk_reads_echo_default_then_scripted_replies_in_order(oai: OpenAIBackend) -> None:
    oai.script(Reply(text="one", usage=Usage(7, 3, cache_read_tokens=2)), Reply(text="two"))
    client = openai_sdk(oai)
    answers = [client.chat.completions.create(model="m1", messages=OAI_USER) for _ in range(3)]
    assert [a.choices[0].message.content for a in answers] == ["one", "two", "echo: héllo wörld ✓"]
    assert answers[0].usage is not None and answers[0].usage.prompt_tokens == 7
    assert answers[0].usage.prompt_tokens_details is not None
    assert answers[0].usage.prompt_tokens_details.cached_tokens == 2
    assert answers[2].model == "m1" and answers[2].choices[0].finish_reason == "stop"
    sent = oai.last_request
    assert sent.api_key == "sk-test" and sent.json["messages"] == USER and sent.model == "m1"
    assert oai.connections_opened == 1, "the SDK's keep-alive connection is reused"


def test_openai_stream_has_role_first_tool_call_pieces_usage_and_done(oai: OpenAIBackend) -> None:
    oai.script(Reply(text="Let me check. ", tool_calls=[WEATHER], thinking="hmm"))
    chunks = list(
        openai_sdk(oai).chat.completions.create(
            model="m",
            messages=OAI_USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert text == "Let me check. "
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments) == {"city": "Paris", "unit": "°C"} and len(pieces) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 + 1  # "Let me check." + thinking "hmm"


def test_openai_auth_embeddings_models_and_in_stream_error(oai: OpenAIBackend) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_sdk(oai, key="wrong").models.list()
    client = openai_sdk(oai)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    vectors = client.embeddings.create(model="e", input=["a", "b"])  # SDK asks for base64, decodes
    assert vectors.data[1].embedding == pytest.approx(embedding("b"), abs=1e-6)
    assert client.completions.create(model="m", prompt="hi").choices[0].text == "echo: hi"
    oai.script(StreamError(after=2, message="boom"))
    with pytest.raises(openai.APIError, match="boom"):
        list(client.chat.completions.create(model="m", messages=OAI_USER, stream=True))


@pytest.mark.parametrize("wire", [Wire(crlf=True), Wire(split_every=1, split_pause=0), Wire(split_every=5)])
def test_openai_sdk_survives_crlf_and_writes_split_inside_utf8(wire: Wire) -> None:
    with OpenAIBackend(wire=wire) as fake:
        fake.script(Stream(chunks=["Hé", "llo ", "wörld ✓ 日本"]))
        stream = openai_sdk(fake).chat.completions.create(model="m", messages=OAI_USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Héllo wörld ✓ 日本"


# --- Anthropic -------------------------------------------------------------------------------------


def test_anthropic_sdk_reads_thinking_text_tool_use_and_cache_usage(claude: AnthropicBackend) -> None:
    claude.script(Reply(text="Checking.", tool_calls=[WEATHER], usage=Usage(10, 5, 3, 4)))
    message = anthropic_sdk(claude).messages.create(
        model="claude-x",
        max_tokens=100,
        messages=ANT_USER,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use" and message.model == "claude-x"
    assert message.content[2].type == "tool_use" and message.content[2].input == dict(WEATHER.arguments)
    assert message.usage.cache_read_input_tokens == 3 and message.usage.cache_creation_input_tokens == 4
    sent = claude.last_request
    assert sent.api_key == "ak-test" and sent.header("anthropic-version")  # x-api-key or Bearer


def test_anthropic_sdk_streams_thinking_text_and_tool_input(claude: AnthropicBackend) -> None:
    claude.script(Reply(text="Héllo wörld", thinking="let me think", tool_calls=[WEATHER]))
    with anthropic_sdk(claude).messages.stream(model="m", max_tokens=50, messages=ANT_USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Héllo wörld"
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "let me think" and thinking.signature
    assert final.content[2].type == "tool_use" and final.content[2].input == dict(WEATHER.arguments)
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 2 + 3


async def test_anthropic_raw_event_sequence_is_the_documented_one(session: aiohttp.ClientSession) -> None:
    async with AnthropicBackend() as fake:
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        body = {"model": "m", "max_tokens": 5, "messages": USER, "stream": True}
        async with session.post(f"{fake.url}/v1/messages", json=body, headers=headers) as resp:
            raw = (await resp.read()).decode()
    events = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
    expected_head = ["message_start", "content_block_start", "ping", "content_block_delta"]
    expected_tail = ["content_block_stop", "message_delta", "message_stop"]
    assert events[:4] == expected_head and events[-3:] == expected_tail
    delta = json.loads(raw.split("event: message_delta")[1].split("data: ")[1].splitlines()[0])
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 4


def test_anthropic_sdk_survives_crlf_and_writes_split_inside_utf8() -> None:
    with AnthropicBackend(wire=Wire(split_every=1, split_pause=0, crlf=True)) as fake:
        fake.script(Stream(chunks=["Hé", "llo ", "wörld ✓ 日本"], thinking="考える", tool_calls=[WEATHER]))
        with anthropic_sdk(fake).messages.stream(model="m", max_tokens=5, messages=ANT_USER) as stream:
            assert "".join(stream.text_stream) == "Héllo wörld ✓ 日本"
            final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == "考える"
    assert final.content[2].type == "tool_use" and final.content[2].input == dict(WEATHER.arguments)


def test_anthropic_requires_key_and_version_and_counts_tokens(claude: AnthropicBackend) -> None:
    client = anthropic_sdk(claude)
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version"):
        client.messages.create(
            model="m",
            max_tokens=5,
            messages=ANT_USER,
            extra_headers={"anthropic-version": anthropic.Omit()},
        )
    assert client.messages.count_tokens(model="m", messages=ANT_USER).input_tokens == 3
    assert [m.id for m in client.models.list()] == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    claude.script(StreamError(after=3))
    stream = client.messages.stream(model="m", max_tokens=5, messages=ANT_USER)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"), stream as events:
        events.until_done()


# --- Ollama ----------------------------------------------------------------------------------------


async def test_ollama_chat_streams_ndjson_by_default_and_json_on_request(
    session: aiohttp.ClientSession,
) -> None:
    async with OllamaBackend() as fake:
        body: dict[str, Any] = {"model": "qwen3:8b", "messages": USER, "think": True}
        async with session.post(f"{fake.url}/api/chat", json=body) as resp:
            assert resp.content_type == "application/x-ndjson"
            lines = [json.loads(line) async for line in resp.content if line.strip()]
        *parts, last = lines
        assert all(not p["done"] for p in parts) and last["done"] and last["done_reason"] == "stop"
        assert "".join(p["message"].get("thinking", "") for p in parts) == "thinking about: héllo wörld ✓"
        assert "".join(p["message"]["content"] for p in parts) == "echo: héllo wörld ✓"
        assert (
            last["message"]["content"] == ""
            and last["eval_count"] == 4 + 5
            and last["prompt_eval_count"] == 3
        )
        assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= last.keys()

        fake.script(Reply(text="", tool_calls=[WEATHER]))
        async with session.post(f"{fake.url}/api/chat", json={**body, "stream": False}) as resp:
            whole = await resp.json()
        assert whole["done"] and whole["message"]["tool_calls"][0]["function"]["arguments"] == {
            "city": "Paris",
            "unit": "°C",
        }


async def test_ollama_metadata_generate_embed_and_openai_compat(session: aiohttp.ClientSession) -> None:
    async with OllamaBackend(models=["llama3.2:latest"], version="0.9.0") as fake:

        async def get(path: str) -> Any:
            async with session.get(fake.url + path) as resp:
                return await resp.json() if resp.content_type == "application/json" else await resp.text()

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with session.post(fake.url + path, json=body) as resp:
                return await resp.json(content_type=None)

        assert await get("/") == "Ollama is running"
        assert (await get("/api/version"))["version"] == "0.9.0"
        assert [m["name"] for m in (await get("/api/tags"))["models"]] == ["llama3.2:latest"]
        assert "llama.context_length" in (await post("/api/show", {"model": "x"}))["model_info"]
        assert (await post("/api/generate", {"model": "x", "prompt": "hi", "stream": False}))[
            "response"
        ] == "echo: hi"
        assert (await post("/api/embed", {"model": "e", "input": ["a"]}))["embeddings"] == [embedding("a")]
        compat = await post("/v1/chat/completions", {"model": "x", "messages": USER})
        assert compat["object"] == "chat.completion" and compat["choices"][0]["message"][
            "content"
        ].startswith("echo")
        fake.script(Status(404, message="model 'x' not found"))
        assert await post("/api/chat", {"model": "x", "messages": USER}) == {"error": "model 'x' not found"}
        assert [r.path for r in fake.requests][-2:] == ["/v1/chat/completions", "/api/chat"]


# --- Faults, shared by all three fakes -------------------------------------------------------------

STREAM_REQUESTS = {
    OpenAIBackend: ("/v1/chat/completions", {"model": "m", "messages": USER, "stream": True}),
    AnthropicBackend: ("/v1/messages", {"model": "m", "max_tokens": 9, "messages": USER, "stream": True}),
    OllamaBackend: ("/api/chat", {"model": "m", "messages": USER}),
}
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
Fake = type[OpenAIBackend] | type[AnthropicBackend] | type[OllamaBackend]


@pytest.mark.parametrize("kind", list(STREAM_REQUESTS))
async def test_faults_behave_alike_on_every_fake(kind: Fake, session: aiohttp.ClientSession) -> None:
    path, body = STREAM_REQUESTS[kind]
    async with kind() as fake:

        async def send(timeout: float = 5) -> tuple[int, bytes]:
            post = session.post(
                fake.url + path, json=body, headers=HEADERS, timeout=aiohttp.ClientTimeout(timeout)
            )
            async with post as resp:
                return resp.status, await resp.read()

        fake.script(CutStream(after=2))
        with pytest.raises(aiohttp.ClientPayloadError):
            await send()
        assert fake.last_request.outcome is Outcome.CUT

        fake.script(Hang(30))
        with pytest.raises(asyncio.TimeoutError):
            await send(timeout=0.2)
        await fake.wait_until_async(lambda: fake.disconnects == 1)

        fake.script(NeverEndingStream(interval=0.01))
        async with session.post(fake.url + path, json=body, headers=HEADERS) as resp:
            first_bytes = await resp.content.read(200)
        assert first_bytes
        await fake.wait_until_async(lambda: fake.disconnects == 2)

        fake.script(Drop())
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await send()

        fake.script(InvalidUTF8(), Status(429, headers={"Retry-After": "1"}), Garbage(), HTML(), EmptyBody())
        assert b"\xff\xfe" in (await send())[1]
        async with session.post(fake.url + path, json=body, headers=HEADERS) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            assert "rate" in (await resp.text()).lower() or kind is OllamaBackend
        assert await send() == (200, b"not json")
        status, page = await send()
        assert status == 502 and page.startswith(b"<html>")
        assert await send() == (200, b"")

        fake.script(Slow(interval=0.02, size=64))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await send())[0] == 200 and loop.time() - started > 0.1

        fake.script(Status(503), path="/nowhere")  # a path-scripted behaviour: model calls don't take it
        assert (await send())[0] == 200 and fake.pending(path="/nowhere") == 1 and fake.pending() == 0


# --- Threads ---------------------------------------------------------------------------------------


def test_stop_ends_hanging_requests_and_leaves_no_thread_or_task_behind() -> None:
    before = threading.active_count()
    fake = OpenAIBackend(default=Hang(float("inf")))
    thread = ServerThread(fake).start()
    client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=10)
    errors: list[BaseException] = []

    def list_models() -> None:
        try:
            client.models.list()
        except openai.APIConnectionError as error:  # the fake closed the socket while hanging
            errors.append(error)

    caller = threading.Thread(target=list_models)
    fake.script(Hang(float("inf")), path="/v1/models")
    caller.start()
    fake.wait_until(lambda: len(fake.requests) == 1)
    thread.stop()
    caller.join(5)
    assert errors and fake.last_request.outcome is Outcome.STOPPED
    assert thread.leftover_tasks == 0 and threading.active_count() == before


def test_run_in_thread_takes_loose_start_and_stop_callables() -> None:
    events: list[str] = []

    async def start() -> int:
        events.append(f"start in {threading.current_thread().name}")
        return 4242

    async def stop() -> None:
        events.append("stop")

    with run_in_thread(start, stop, name="toy") as running:
        assert running.port == 4242 and running.url == "http://127.0.0.1:4242"
    assert events == ["start in toy", "stop"]
