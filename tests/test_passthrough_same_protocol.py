"""Same protocol in and out (Anthropic to Anthropic, Ollama to Ollama, OpenAI to OpenAI): the client's
request goes upstream untouched except ``model`` (and the profile's system prompt), and the answer
comes back byte for byte, streams included, so nothing a provider adds is lost.

"Byte for byte" is checked against the fake itself: the same (rewritten) request is sent straight to
the fake and both bodies are compared, with only the per-request ids and timestamps normalised.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from .conftest import StartGateway
from .cross_protocol import ANTHROPIC_KEY, ENV, SUNNY, Fakes, after_two_deltas, fakes_fixture, ndjson_lines
from .fakes import CutStream, Reply, Status, Stream, StreamError, ToolCall, Usage, Wire
from .gateway import RunningGateway

ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}

# An Anthropic request using what only Anthropic understands: cache_control on system, message and
# tool blocks, metadata, thinking with a signed thinking block in the history, tool use and results,
# top_k, and a field newer than this gateway.
ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "an",
    "max_tokens": 2048,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
    "metadata": {"user_id": "user-42"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "top_k": 5,
    "tools": [
        {
            "name": "read_file",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Fix main.py", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Read it first.", "signature": "EqQBCkYIBRgCKkD-signed"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy-opaque"},
                {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "main.py"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "print('hi')"}],
        },
    ],
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}

OLLAMA_REQUEST: dict[str, Any] = {
    "model": "ol",
    "messages": [
        {"role": "system", "content": "You control a smart home."},
        {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgoAAAANSUhEUg"]},
    ],
    "options": {"num_ctx": 8192, "temperature": 0.1, "mirostat": 2},
    "keep_alive": "30m",
    "format": {"type": "object", "properties": {"answer": {"type": "string"}}},
    "think": False,
    "tools": [{"type": "function", "function": {"name": "lights", "parameters": {"type": "object"}}}],
    "stream": False,
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def rewritten(body: dict[str, Any], model: str) -> dict[str, Any]:
    return {**copy.deepcopy(body), "model": model}


def normalised(text: str) -> str:
    """Per-request ids (``msg_fake-3``) and clock fields differ between two identical requests."""
    text = re.sub(r"fake[-_]\d+", "fake-N", text)
    text = re.sub(r'"call_\d+_', '"call_N_', text)
    text = re.sub(r'"created":\d+', '"created":0', text)
    return re.sub(r'"created_at":"[^"]*"', '"created_at":""', text)


# --------------------------------------------------------------------------------------------------
# Anthropic to Anthropic
# --------------------------------------------------------------------------------------------------


def test_anthropic_request_goes_upstream_untouched_except_model(gw: RunningGateway, fakes: Fakes) -> None:
    resp = httpx.post(
        gw.url + "/v1/messages",
        json=ANTHROPIC_REQUEST,
        headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"},
    )
    assert resp.status_code == 200, resp.text
    sent = fakes.anthropic.last_request
    assert sent.path == "/v1/messages"
    assert sent.json == rewritten(ANTHROPIC_REQUEST, "claude-up")
    assert sent.header("x-api-key") == ANTHROPIC_KEY  # the gateway's key, never the client's
    assert sent.header("anthropic-version")


def test_anthropic_beta_goes_to_an_anthropic_tier_only_and_must_be_feature_names(
    gw: RunningGateway, fakes: Fakes
) -> None:
    beta = "prompt-caching-2024-07-31, context-management-2025-06-27"
    for stream in (False, True):
        resp = httpx.post(
            gw.url + "/v1/messages",
            json={**ANTHROPIC_ONLY, "stream": stream},
            headers={"anthropic-beta": beta, "x-custom": "not forwarded"},
        )
        assert resp.status_code == 200, resp.text
        sent = fakes.anthropic.last_request
        assert sent.header("anthropic-beta") == beta  # Claude Code's beta features reach the upstream
        assert sent.header("x-custom") is None  # every other client header still stays here
    plain = {"model": "oa", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(gw.url + "/v1/messages", json=plain, headers={"anthropic-beta": beta})
    assert resp.status_code == 200 and fakes.openai.last_request.header("anthropic-beta") is None
    for bad in ("a b", "x;y", "ok," + "f" * 101, ",".join(["f"] * 40)):
        refused = httpx.post(gw.url + "/v1/messages", json=plain, headers={"anthropic-beta": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["type"] == "error"
        assert refused.json()["error"]["type"] == "invalid_request_error"


# Only Anthropic can run its server tools or read some block types: no translation exists for them.
ANTHROPIC_ONLY: dict[str, Any] = {
    "model": "an",
    "max_tokens": 1024,
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "search_result",
                    "source": "https://example.com/docs",
                    "title": "Docs",
                    "content": [{"type": "text", "text": "The API moved to v2."}],
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": "What changed in the API?"},
            ],
        }
    ],
}


def test_anthropic_only_features_are_forwarded_to_an_anthropic_tier(gw: RunningGateway, fakes: Fakes) -> None:
    resp = httpx.post(gw.url + "/v1/messages", json=ANTHROPIC_ONLY)
    assert resp.status_code == 200, resp.text
    assert fakes.anthropic.last_request.json == rewritten(ANTHROPIC_ONLY, "claude-up")


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_answer_is_relayed_byte_for_byte(gw: RunningGateway, fakes: Fakes, stream: bool) -> None:
    fakes.anthropic.script(
        Reply(text="Done.", thinking="Edit line 1.", tool_calls=[ToolCall("read_file", {"path": "a.py"})])
    )
    body = {**ANTHROPIC_REQUEST, "stream": stream}
    through = httpx.post(gw.url + "/v1/messages", json=body, timeout=10)
    fakes.anthropic.script(
        Reply(text="Done.", thinking="Edit line 1.", tool_calls=[ToolCall("read_file", {"path": "a.py"})])
    )
    direct = httpx.post(
        fakes.anthropic.url + "/v1/messages",
        json=rewritten(body, "claude-up"),
        headers=ANTHROPIC_HEADERS,
        timeout=10,
    )
    assert through.status_code == direct.status_code == 200
    assert normalised(through.text) == normalised(direct.text)
    assert "sig-fake-" in through.text  # the thinking signature survived (translation drops it)
    entry = gw.traffic()[0]
    assert entry["status"] == 200 and entry["error"] is None


def test_anthropic_sdk_stream_keeps_signatures_and_the_upstream_model(
    gw: RunningGateway, fakes: Fakes
) -> None:
    fakes.anthropic.script(Reply(text="Done.", thinking="Edit line 1."))
    client = anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)
    with client.messages.stream(
        model="an",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Fix main.py"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-up"  # relayed as the upstream said it
    assert final.content[0].type == "thinking"
    assert final.content[0].signature.startswith("sig-fake-")
    assert final.content[1].type == "text" and final.content[1].text == "Done."


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_usage_is_recorded_with_cache_tokens_in_the_prompt(
    gw: RunningGateway, fakes: Fakes, stream: bool
) -> None:
    usage = Usage(input_tokens=10, output_tokens=5, cache_read_tokens=100, cache_creation_tokens=20)
    fakes.anthropic.script(Reply(text="ok", usage=usage))
    httpx.post(gw.url + "/v1/messages", json={**ANTHROPIC_REQUEST, "stream": stream}, timeout=10)
    entry = gw.traffic()[0]
    # The same meaning as a translated request (OpenAI's prompt_tokens): input + cache writes + reads.
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (130, 5)


def test_anthropic_long_stream_still_records_the_input_tokens_of_its_start(
    gw: RunningGateway, fakes: Fakes
) -> None:
    # Far longer than what the relay keeps of a stream's end: the input count is only in message_start.
    fakes.anthropic.script(Stream(chunks=["token "] * 3000, usage=Usage(input_tokens=42, output_tokens=3000)))
    resp = httpx.post(gw.url + "/v1/messages", json={**ANTHROPIC_REQUEST, "stream": True}, timeout=20)
    assert resp.text.count("text_delta") == 3000
    entry = gw.traffic()[0]
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["error"]) == (42, 3000, None)


PROMPTED = 'system_prompt = "Answer in French."'


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "Answer in French."),
        ("Be brief.", "Answer in French.\n\nBe brief."),
        (
            [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            [
                {"type": "text", "text": "Answer in French."},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            ],
        ),
    ],
    ids=["none", "string", "blocks"],
)
def test_anthropic_profile_system_prompt_goes_first_keeping_the_clients(
    start_gateway: StartGateway, fakes: Fakes, system: Any, expected: Any
) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config(profile_extra=PROMPTED), env=ENV)
    body: dict[str, Any] = {"model": "an", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    if system is not None:
        body["system"] = system
    assert httpx.post(gw.url + "/v1/messages", json=body).status_code == 200
    assert fakes.anthropic.last_request.json == {**rewritten(body, "claude-up"), "system": expected}


def test_a_retried_native_call_does_not_repeat_the_profile_prompt(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    gw = start_gateway(
        fakes.config(profile_extra=PROMPTED),
        env=ENV,
        gateway_extra="max_retries = 1\nretry_delay_ms = 1\n",
    )
    fakes.anthropic.script(Status(503), Reply(text="ok"))
    fakes.ollama.script(Status(503), Reply(text="ok"))
    body = {
        "model": "an",
        "max_tokens": 10,
        "system": "Mine.",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert httpx.post(gw.url + "/v1/messages", json=body).status_code == 200
    systems = [r.json["system"] for r in fakes.anthropic.requests_to("/v1/messages")]
    assert systems == ["Answer in French.\n\nMine."] * 2
    chat = {"model": "ol", "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
    assert httpx.post(gw.url + "/api/chat", json=chat).status_code == 200
    firsts = [r.json["messages"][:2] for r in fakes.ollama.requests_to("/api/chat")]
    assert (
        firsts
        == [[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]] * 2
    )


def test_anthropic_upstream_errors_keep_anthropic_shape_and_retry_after(
    gw: RunningGateway, fakes: Fakes
) -> None:
    fakes.anthropic.script(
        Status(429, headers={"Retry-After": "3"}, message="rate limited"),
        Status(400, message="messages.1: thinking blocks must come first"),
    )
    limited = httpx.post(gw.url + "/v1/messages", json=ANTHROPIC_REQUEST)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["type"] == "error"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    refused = httpx.post(gw.url + "/v1/messages", json=ANTHROPIC_REQUEST)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and "thinking blocks must come first" in error["message"]


def test_anthropic_mid_stream_error_event_is_relayed_and_recorded(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.anthropic.script(
        StreamError(after=after_two_deltas("an"), message="Overloaded", reply=Stream(chunks=SUNNY))
    )
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="an", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert "".join(received) == "Sunny" and "Overloaded" in str(caught.value)
    entry = gw.traffic()[0]
    assert entry["error"] and "Overloaded" in entry["error"]


def test_anthropic_stream_cut_by_the_upstream_ends_with_an_error_event(
    gw: RunningGateway, fakes: Fakes
) -> None:
    fakes.anthropic.script(CutStream(after=after_two_deltas("an"), reply=Stream(chunks=SUNNY)))
    resp = httpx.post(gw.url + "/v1/messages", json={**ANTHROPIC_REQUEST, "stream": True}, timeout=10)
    last = resp.text.rstrip("\n").split("\n\n")[-1].splitlines()
    assert last[0] == "event: error"
    assert json.loads(last[1].removeprefix("data: "))["error"]["type"] == "api_error"
    assert gw.traffic()[0]["error"]


# --------------------------------------------------------------------------------------------------
# Ollama to Ollama
# --------------------------------------------------------------------------------------------------


def test_ollama_request_goes_upstream_untouched_except_model(gw: RunningGateway, fakes: Fakes) -> None:
    resp = httpx.post(gw.url + "/api/chat", json=OLLAMA_REQUEST)
    assert resp.status_code == 200, resp.text
    sent = fakes.ollama.last_request
    assert sent.path == "/api/chat"
    assert sent.json == rewritten(OLLAMA_REQUEST, "llama-up")


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
@pytest.mark.parametrize("stream", [False, True])
def test_ollama_answer_is_relayed_byte_for_byte(
    gw: RunningGateway, fakes: Fakes, path: str, stream: bool
) -> None:
    if path == "/api/chat":
        body: dict[str, Any] = {**OLLAMA_REQUEST, "stream": stream, "think": True}
    else:
        body = {"model": "ol", "prompt": "Why is the sky blue?", "stream": stream, "keep_alive": 0}
    reply = Reply(text="Because of Rayleigh scattering.", usage=Usage(7, 4))
    fakes.ollama.script(reply)
    through = httpx.post(gw.url + path, json=body, timeout=10)
    fakes.ollama.script(reply)
    direct = httpx.post(fakes.ollama.url + path, json=rewritten(body, "llama-up"), timeout=10)
    assert through.status_code == direct.status_code == 200
    assert normalised(through.text) == normalised(direct.text)
    lines = ndjson_lines(through)
    assert lines[-1]["done"] is True and "error" not in lines[-1]
    entry = gw.traffic()[0]
    assert entry["error"] is None and entry["status"] == 200
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (7, 4)


def test_ollama_backend_default_options_fill_in_under_the_clients(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    config = fakes.config().replace(
        'provider = "ollama"', 'provider = "ollama"\ndefault_options = { num_ctx = 16384, top_k = 20 }'
    )
    gw = start_gateway(config, env=ENV)
    assert httpx.post(gw.url + "/api/chat", json=OLLAMA_REQUEST).status_code == 200
    options = fakes.ollama.last_request.json["options"]
    assert options == {"num_ctx": 8192, "temperature": 0.1, "mirostat": 2, "top_k": 20}


def test_ollama_profile_system_prompt_goes_first(start_gateway: StartGateway, fakes: Fakes) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config(profile_extra=PROMPTED), env=ENV)
    httpx.post(gw.url + "/api/chat", json=OLLAMA_REQUEST)
    assert fakes.ollama.last_request.json["messages"][0] == {
        "role": "system",
        "content": "Answer in French.\n\nYou control a smart home.",
    }
    httpx.post(
        gw.url + "/api/generate", json={"model": "ol", "prompt": "Hi", "system": "Mine.", "stream": False}
    )
    assert fakes.ollama.last_request.json["system"] == "Answer in French.\n\nMine."


def test_ollama_mid_stream_error_line_is_relayed_once_and_recorded(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.ollama.script(StreamError(after=2, message="model runner crashed", reply=Stream(chunks=SUNNY)))
    lines = ndjson_lines(
        httpx.post(gw.url + "/api/chat", json={**OLLAMA_REQUEST, "stream": True}, timeout=10)
    )
    assert "".join(line["message"]["content"] for line in lines[:-1]) == "Sunny"
    assert lines[-1] == {"error": "model runner crashed"}  # the upstream's own line, not a second one
    entry = gw.traffic()[0]
    assert entry["error"] and "model runner crashed" in entry["error"]


def test_ollama_stream_cut_by_the_upstream_ends_with_an_error_line(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.ollama.script(CutStream(after=2, reply=Stream(chunks=SUNNY)))
    lines = ndjson_lines(
        httpx.post(gw.url + "/api/chat", json={**OLLAMA_REQUEST, "stream": True}, timeout=10)
    )
    assert "".join(line.get("message", {}).get("content", "") for line in lines) == "Sunny"
    assert "error" in lines[-1] and "done" not in lines[-1]
    assert gw.traffic()[0]["error"]


@pytest.mark.parametrize("protocol", ["anthropic", "ollama"])
def test_a_stream_cut_inside_an_event_never_reaches_the_client_half_sent(
    gw: RunningGateway, fakes: Fakes, protocol: str
) -> None:
    """Every event the client receives parses; the cut one is left out and the error follows."""
    if protocol == "anthropic":
        fakes.anthropic.script(
            CutStream(after=after_two_deltas("an"), reply=Stream(chunks=SUNNY), mid_event=True)
        )
        body = httpx.post(
            gw.url + "/v1/messages", json={**ANTHROPIC_REQUEST, "stream": True}, timeout=10
        ).text
        datas = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data:")]
    else:
        fakes.ollama.script(CutStream(after=2, reply=Stream(chunks=SUNNY), mid_event=True))
        body = httpx.post(gw.url + "/api/chat", json={**OLLAMA_REQUEST, "stream": True}, timeout=10).text
        datas = [line for line in body.splitlines() if line]
    events = [json.loads(data) for data in datas]  # (a half-sent event would not parse)
    assert "error" in events[-1] and events[-1].get("type", "error") == "error"
    assert gw.traffic()[0]["error"]


def test_ollama_upstream_error_keeps_ollama_shape(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.ollama.script(Status(400, message="invalid format schema"))
    resp = httpx.post(gw.url + "/api/chat", json=OLLAMA_REQUEST)
    assert resp.status_code == 400
    assert list(resp.json()) == ["error"] and "invalid format schema" in resp.json()["error"]


# --------------------------------------------------------------------------------------------------
# OpenAI to OpenAI, and awkward framing for all three relays
# --------------------------------------------------------------------------------------------------


def test_openai_stream_is_relayed_byte_for_byte(gw: RunningGateway, fakes: Fakes) -> None:
    body = {
        "model": "oa",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "vendor_extension": {"keep": True},
    }
    reply = Reply(text="Hello ✓", thinking="short", tool_calls=[ToolCall("f", {"a": 1})], usage=Usage(3, 4))
    fakes.openai.script(reply)
    through = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    fakes.openai.script(reply)
    direct = httpx.post(fakes.openai.url + "/v1/chat/completions", json=rewritten(body, "gpt-up"), timeout=10)
    assert normalised(through.text) == normalised(direct.text)
    assert fakes.openai.requests[0].json == rewritten(body, "gpt-up")
    entry = gw.traffic()[0]
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["error"]) == (3, 4, None)


def test_openai_mid_stream_error_is_recorded_with_the_upstreams_message(
    gw: RunningGateway, fakes: Fakes
) -> None:
    fakes.openai.script(StreamError(after=3, message="context overflow", reply=Stream(chunks=SUNNY)))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="context overflow"):
        list(
            client.chat.completions.create(
                model="oa", messages=[{"role": "user", "content": "q"}], stream=True
            )
        )
    entry = gw.traffic()[0]
    assert entry["error"] and "context overflow" in entry["error"]


@pytest.fixture(scope="module")
def awkward() -> Iterator[Fakes]:
    yield from fakes_fixture(Wire(crlf=True, split_every=3))


def test_relays_read_usage_and_ends_from_crlf_three_byte_writes(
    start_gateway: StartGateway, awkward: Fakes
) -> None:
    awkward.reset()
    gw = start_gateway(awkward.config(), env=ENV)
    usage = Usage(input_tokens=21, output_tokens=8)
    requests = [
        ("/v1/chat/completions", {"model": "oa", "stream_options": {"include_usage": True}}),
        ("/v1/messages", {"model": "an", "max_tokens": 50}),
        ("/api/chat", {"model": "ol"}),
    ]
    for path, fields in requests:
        awkward.by_tier(fields["model"]).script(Reply(text="Één ☕ moment", usage=usage))
        body = {**fields, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        resp = httpx.post(gw.url + path, json=body, timeout=20)
        assert resp.status_code == 200
        entry = gw.traffic()[0]
        assert entry["error"] is None, (path, entry["error"])
        assert (entry["prompt_tokens"], entry["completion_tokens"]) == (21, 8), path


def test_an_operator_can_keep_anthropic_beta_to_itself(start_gateway: StartGateway, fakes: Fakes) -> None:
    fakes.reset()
    config = fakes.config().replace(
        'api_key_env = "ANTHROPIC_KEY"', 'api_key_env = "ANTHROPIC_KEY"\npass_anthropic_beta = false'
    )
    gw = start_gateway(config, env=ENV)
    resp = httpx.post(
        gw.url + "/v1/messages", json=ANTHROPIC_ONLY, headers={"anthropic-beta": "context-1m-2025-08-07"}
    )
    assert resp.status_code == 200, resp.text
    assert fakes.anthropic.last_request.header("anthropic-beta") is None
