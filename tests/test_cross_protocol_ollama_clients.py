"""Ollama clients (Home Assistant, Open WebUI: plain HTTP, NDJSON streams) served by an OpenAI-compatible
or an Anthropic backend, plus the Ollama model-listing endpoints that make profiles look like models.

The client here is what those integrations do on the wire: POST JSON, read the NDJSON body line by
line, stop at the ``done: true`` line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import StartGateway
from .cross_protocol import (
    ENV,
    SUNNY,
    WEATHER_TOOL_OPENAI,
    Fakes,
    after_two_deltas,
    fakes_fixture,
    ndjson_lines,
    ollama_stream,
)
from .fakes import LENGTH, CutStream, Reply, Status, Stream, StreamError, ToolCall, Usage, Wire
from .gateway import RunningGateway

TRANSLATED = ["oa", "an"]
USER = [{"role": "user", "content": "Turn on the kitchen lights"}]
FINAL_STATS = {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def chat(gw: RunningGateway, **fields: Any) -> list[dict[str, Any]]:
    """A streamed ``/api/chat`` (Ollama's default), read line by line."""
    return ollama_stream(gw.url + "/api/chat", {"messages": USER, **fields})


def chat_once(gw: RunningGateway, **fields: Any) -> dict[str, Any]:
    resp = httpx.post(gw.url + "/api/chat", json={"messages": USER, "stream": False, **fields}, timeout=10)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def assert_final_line(line: dict[str, Any], model: str, prompt: int, completion: int) -> None:
    """Real Ollama's last line: done, empty content, real counts and every statistic field."""
    assert line["done"] is True and line["model"] == model
    assert line.get("message", {}).get("content", "") == "" and line.get("response", "") == ""
    assert (line["prompt_eval_count"], line["eval_count"]) == (prompt, completion)
    assert set(line) >= FINAL_STATS and line["created_at"]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_streamed_chat_is_ndjson_ending_in_one_done_line_with_real_counts(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Stream(chunks=["Turning ", "on the ", "lights ✓"], usage=Usage(14, 5)))
    lines = chat(gw, model=f"{tier}:latest")
    pieces = [line["message"]["content"] for line in lines[:-1]]
    assert "".join(pieces) == "Turning on the lights ✓"
    assert all(line["done"] is False and line["model"] == f"{tier}:latest" for line in lines[:-1])
    assert_final_line(lines[-1], f"{tier}:latest", 14, 5)
    assert lines[-1]["done_reason"] == "stop"
    assert sum(line["done"] for line in lines) == 1
    sent = fakes.by_tier(tier).last_request
    assert sent.model == {"oa": "gpt-up", "an": "claude-up"}[tier]
    entry = gw.traffic()[0]
    assert (entry["endpoint"], entry["stream"], entry["status"], entry["error"]) == (
        "/api/chat",
        True,
        200,
        None,
    )
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (14, 5)


@pytest.mark.parametrize("tier", TRANSLATED)
def test_unstreamed_chat_is_one_object_with_the_answer_and_counts(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Reply(text="Done.", usage=Usage(9, 2)))
    answer = chat_once(gw, model=tier)
    assert answer["message"] == {"role": "assistant", "content": "Done."}
    assert answer["done"] is True and answer["done_reason"] == "stop" and answer["model"] == tier
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (9, 2)
    assert (gw.traffic()[0]["prompt_tokens"], gw.traffic()[0]["completion_tokens"]) == (9, 2)


def test_system_turns_and_options_reach_openai_as_openai_fields_only(
    gw: RunningGateway, fakes: Fakes
) -> None:
    messages = [
        {"role": "system", "content": "You control a smart home."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Lights on"},
    ]
    chat_once(
        gw,
        model="oa",
        messages=messages,
        options={"temperature": 0.2, "num_predict": 64, "num_ctx": 8192, "stop": ["\n\n"]},
        keep_alive="5m",
        think=True,
    )
    sent = fakes.openai.last_request.json
    assert sent["messages"] == messages
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.2, 64, ["\n\n"])
    # Strict OpenAI-compatible APIs refuse unknown fields: nothing Ollama-only goes there, and
    # ``think`` is asked for the OpenAI way.
    assert not {"options", "keep_alive", "think"} & set(sent)
    assert sent["reasoning_effort"] == "medium"
    chat_once(gw, model="oa", think=False, keep_alive=0)
    assert not {"keep_alive", "think", "reasoning_effort"} & set(fakes.openai.last_request.json)


def test_system_turns_and_options_reach_anthropic_in_its_shape(gw: RunningGateway, fakes: Fakes) -> None:
    chat_once(
        gw,
        model="an",
        messages=[
            {"role": "system", "content": "You control a smart home."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Lights on"},
        ],
        options={"temperature": 0.2, "num_predict": 64},
        keep_alive="5m",
    )
    sent = fakes.anthropic.last_request.json
    assert sent["system"] == "You control a smart home."
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "Lights on"),
    ]
    assert (sent["temperature"], sent["max_tokens"]) == (0.2, 64)
    assert "keep_alive" not in sent and "options" not in sent


@pytest.mark.parametrize("tier", TRANSLATED)
def test_streamed_parallel_tool_calls_arrive_whole_in_one_line_before_done(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    calls = [
        ToolCall("lights", {"room": "kitchen", "on": True}),
        ToolCall("lights", {"room": "hall", "on": True}),
    ]
    fakes.by_tier(tier).script(Reply(text="", tool_calls=calls))
    lines = chat(gw, model=tier, tools=[WEATHER_TOOL_OPENAI])
    with_tools = [line for line in lines if line.get("message", {}).get("tool_calls")]
    assert len(with_tools) == 1 and with_tools[0] is lines[-2]
    got = [
        (c["function"]["name"], c["function"]["arguments"]) for c in with_tools[0]["message"]["tool_calls"]
    ]
    assert got == [("lights", {"room": "kitchen", "on": True}), ("lights", {"room": "hall", "on": True})]
    assert lines[-1]["done"] is True and lines[-1]["message"]["content"] == ""


@pytest.mark.parametrize("tier", TRANSLATED)
def test_unstreamed_tool_call_is_a_native_tool_call(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Reply(text="", tool_calls=[ToolCall("lights", {"room": "kitchen"})]))
    message = chat_once(gw, model=tier, tools=[WEATHER_TOOL_OPENAI])["message"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("lights", {"room": "kitchen"})
    ]


OLLAMA_TOOL_TURNS = [
    *USER,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "lights", "arguments": {"room": "kitchen"}}},
            {"function": {"name": "thermostat", "arguments": {"celsius": 21}}},
        ],
    },
    {"role": "tool", "tool_name": "thermostat", "content": "set to 21"},
    {"role": "tool", "tool_name": "lights", "content": "on"},
]


def test_tool_results_reach_openai_paired_with_their_calls_by_id(gw: RunningGateway, fakes: Fakes) -> None:
    chat_once(gw, model="oa", messages=OLLAMA_TOOL_TURNS, tools=[WEATHER_TOOL_OPENAI])
    messages = fakes.openai.last_request.json["messages"]
    calls = {c["function"]["name"]: c for c in messages[1]["tool_calls"]}
    assert json.loads(calls["lights"]["function"]["arguments"]) == {"room": "kitchen"}
    assert messages[2] == {"role": "tool", "tool_call_id": calls["thermostat"]["id"], "content": "set to 21"}
    assert messages[3] == {"role": "tool", "tool_call_id": calls["lights"]["id"], "content": "on"}
    assert calls["lights"]["id"] != calls["thermostat"]["id"]


def test_tool_results_reach_anthropic_as_tool_result_blocks(gw: RunningGateway, fakes: Fakes) -> None:
    chat_once(gw, model="an", messages=OLLAMA_TOOL_TURNS, tools=[WEATHER_TOOL_OPENAI])
    turns = fakes.anthropic.last_request.json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    uses = {b["name"]: b["id"] for b in turns[1]["content"] if b["type"] == "tool_use"}
    results = [(b["tool_use_id"], b["content"]) for b in turns[2]["content"]]
    assert results == [(uses["thermostat"], "set to 21"), (uses["lights"], "on")]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_images_reach_the_upstream_in_its_own_form(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    png = "iVBORw0KGgoAAAANSUhEUg"
    chat_once(gw, model=tier, messages=[{"role": "user", "content": "What is this?", "images": [png]}])
    user = fakes.by_tier(tier).last_request.json["messages"][-1]
    if tier == "oa":
        assert user["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        ]
    else:
        assert user["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        ]


@pytest.mark.parametrize("tier", TRANSLATED)
def test_think_turns_reasoning_on_and_it_comes_back_as_thinking(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fake = fakes.by_tier(tier)
    fake.script(Reply(text="Done.", thinking="Kitchen is room 2."))
    lines = chat(gw, model=tier, think=True)
    assert "".join(line["message"].get("thinking", "") for line in lines) == "Kitchen is room 2."
    assert "".join(line["message"]["content"] for line in lines) == "Done."
    sent = fake.last_request.json
    if tier == "an":
        assert sent["thinking"]["type"] == "enabled"
    else:
        assert sent["reasoning_effort"] == "medium"
    fake.script(Reply(text="Done.", thinking="Kitchen is room 2."))
    assert chat_once(gw, model=tier, think=True)["message"]["thinking"] == "Kitchen is room 2."


@pytest.mark.parametrize("tier", TRANSLATED)
def test_a_length_stop_is_done_reason_length(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(
        Reply(text="cut", finish_reason=LENGTH), Reply(text="cut", finish_reason=LENGTH)
    )
    assert chat(gw, model=tier)[-1]["done_reason"] == "length"
    assert chat_once(gw, model=tier)["done_reason"] == "length"


@pytest.mark.parametrize("tier", TRANSLATED)
def test_generate_streams_response_pieces_and_a_done_line(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    fakes.by_tier(tier).script(Stream(chunks=["Blue ", "light ", "scatters."], usage=Usage(6, 3)))
    body = {
        "model": tier,
        "prompt": "Why is the sky blue?",
        "system": "Be brief.",
        "options": {"num_predict": 20},
    }
    lines = ollama_stream(gw.url + "/api/generate", body)
    assert "".join(line["response"] for line in lines) == "Blue light scatters."
    assert_final_line(lines[-1], tier, 6, 3)
    sent = fakes.by_tier(tier).last_request.json
    if tier == "oa":
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Why is the sky blue?"},
        ]
    else:
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 20
    fakes.by_tier(tier).script(Reply(text="Rayleigh."))
    resp = httpx.post(gw.url + "/api/generate", json={**body, "stream": False}, timeout=10)
    assert resp.json()["response"] == "Rayleigh." and resp.json()["done"] is True


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_before_the_answer_are_http_errors_in_ollama_shape(
    gw: RunningGateway, fakes: Fakes, tier: str, stream: bool
) -> None:
    fakes.by_tier(tier).script(Status(429, headers={"Retry-After": "4"}, message="slow down"))
    resp = httpx.post(gw.url + "/api/chat", json={"model": tier, "messages": USER, "stream": stream})
    assert resp.status_code == 429
    assert list(resp.json()) == ["error"] and "slow down" in resp.json()["error"]
    assert resp.headers.get_list("content-type") == ["application/json"]
    assert gw.traffic()[0]["status"] == 429


def test_unknown_model_and_bad_requests_are_ollama_errors(gw: RunningGateway) -> None:
    unknown = httpx.post(gw.url + "/api/chat", json={"model": "llama9:70b", "messages": USER})
    assert unknown.status_code == 404 and "llama9:70b" in unknown.json()["error"]
    for bad in ({"messages": USER}, {"model": "oa", "messages": [{"role": "narrator", "content": "x"}]}, [1]):
        resp = httpx.post(gw.url + "/api/chat", json=bad)
        assert resp.status_code == 400, resp.text
        assert list(resp.json()) == ["error"]
        assert resp.headers.get_list("content-type") == ["application/json"]


@pytest.mark.parametrize(
    ("tool_calls", "message"),
    [
        ("d", "messages[1].tool_calls must be an array of tool calls"),
        (["d"], "messages[1].tool_calls[0] must be an object with a 'function' object"),
        ([{"function": "f"}], "messages[1].tool_calls[0].function must be an object"),
    ],
)
def test_malformed_tool_calls_are_a_clear_ollama_error(
    gw: RunningGateway, tool_calls: Any, message: str
) -> None:
    """Found by the schemathesis run: a string where the tool calls go was refused with Python's own
    words (``'str' object has no attribute 'get'``). The error names the field to fix."""
    turn = {"role": "assistant", "content": "x", "tool_calls": tool_calls}
    resp = httpx.post(gw.url + "/api/chat", json={"model": "oa", "messages": [*USER, turn], "stream": False})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": f"invalid request: {message}"}


@pytest.mark.parametrize("tier", TRANSLATED)
@pytest.mark.parametrize("cut", [False, True], ids=["error-event", "connection-cut"])
def test_a_stream_failing_midway_ends_with_an_error_line_after_what_was_sent(
    gw: RunningGateway, fakes: Fakes, tier: str, cut: bool
) -> None:
    after, reply = after_two_deltas(tier), Stream(chunks=SUNNY)
    fault = CutStream(after, reply) if cut else StreamError(after, "model crashed", reply=reply)
    fakes.by_tier(tier).script(fault)
    lines = chat(gw, model=tier)
    assert "".join(line["message"]["content"] for line in lines[:-1]) == "Sunny"
    assert set(lines[-1]) == {"error"} and not any(line.get("done") for line in lines)
    if not cut:
        assert "model crashed" in lines[-1]["error"]
    entry = gw.traffic()[0]
    assert entry["error"] and entry["stream"] is True


ERRORS_AS_MESSAGE = "ollama_errors_as_message = true"


@pytest.mark.parametrize("stream", [False, True])
def test_errors_as_message_answer_200_with_the_error_as_the_reply(
    start_gateway: StartGateway, fakes: Fakes, stream: bool
) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config(profile_extra=ERRORS_AS_MESSAGE), env=ENV)
    fakes.openai.script(Status(503, message="upstream overloaded"))
    resp = httpx.post(
        gw.url + "/api/chat", json={"model": "oa", "messages": USER, "stream": stream}, timeout=10
    )
    assert resp.status_code == 200
    expected_type = "application/x-ndjson" if stream else "application/json"
    assert resp.headers.get_list("content-type") == [expected_type]
    lines = ndjson_lines(resp) if stream else [resp.json()]
    text = "".join(line["message"]["content"] for line in lines)
    assert "upstream overloaded" in text
    assert lines[-1]["done"] is True and "error" not in lines[-1]
    entry = gw.traffic()[0]
    assert entry["status"] == 503 and "upstream overloaded" in entry["error"]  # the log still knows


def test_errors_as_message_also_speaks_a_mid_stream_failure(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config(profile_extra=ERRORS_AS_MESSAGE), env=ENV)
    fakes.anthropic.script(StreamError(after_two_deltas("an"), "overloaded", reply=Stream(chunks=SUNNY)))
    lines = chat(gw, model="an")
    text = "".join(line["message"]["content"] for line in lines)
    assert text.startswith("Sunny") and "overloaded" in text
    assert lines[-1]["done"] is True and not any("error" in line for line in lines)
    assert gw.traffic()[0]["error"]


def test_errors_as_message_is_off_by_default_and_per_profile(
    start_gateway: StartGateway, fakes: Fakes
) -> None:
    fakes.reset()
    config = fakes.config(
        extra=f'\n[profiles.home]\nmode = "dispatch"\nclassifier = "oa"\n{ERRORS_AS_MESSAGE}\n'
    )
    gw = start_gateway(config, env=ENV)
    fakes.openai.script(Status(503), Status(503))
    assert httpx.post(gw.url + "/api/chat", json={"model": "oa", "messages": USER}).status_code == 503
    spoken = httpx.post(
        gw.url + "/api/chat", json={"model": "home:latest", "messages": USER, "stream": False}
    )
    assert spoken.status_code == 200 and "Sorry" in spoken.json()["message"]["content"]


# --------------------------------------------------------------------------------------------------
# Profiles as models: /api/tags, /api/show, /api/version, auto:latest, key-bound clients
# --------------------------------------------------------------------------------------------------


def test_tags_lists_profiles_default_first(gw: RunningGateway) -> None:
    resp = httpx.get(gw.url + "/api/tags")
    models = resp.json()["models"]
    assert [m["name"] for m in models] == ["default:latest", "auto:latest"]
    assert all(m["model"] == m["name"] and m["details"]["format"] and m["digest"] for m in models)


def test_tags_adds_tiers_and_aliases_when_configured(start_gateway: StartGateway, fakes: Fakes) -> None:
    gw = start_gateway(fakes.config(), env=ENV, gateway_extra="ollama_list_tiers = true\n")
    names = [m["name"] for m in httpx.get(gw.url + "/api/tags").json()["models"]]
    assert names == [
        "default:latest",
        "auto:latest",
        "oa:latest",
        "an:latest",
        "ol:latest",
        "dm:latest",
        "hint:fast",
    ]


def test_show_describes_a_profile_and_404s_an_unknown_name(gw: RunningGateway) -> None:
    shown = httpx.post(gw.url + "/api/show", json={"model": "auto:latest"})
    assert shown.status_code == 200
    assert {"completion", "tools"} <= set(shown.json()["capabilities"])
    assert httpx.post(gw.url + "/api/show", json={"name": "default"}).status_code == 200
    missing = httpx.post(gw.url + "/api/show", json={"model": "llama9:70b"})
    assert missing.status_code == 404 and "llama9:70b" in missing.json()["error"]


def test_version_answers_like_a_recent_ollama(gw: RunningGateway) -> None:
    version = httpx.get(gw.url + "/api/version").json()["version"]
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 6)


def test_a_profile_is_a_model_named_with_its_latest_tag(gw: RunningGateway, fakes: Fakes) -> None:
    fakes.anthropic.script(Reply(text="From the auto profile."))
    lines = chat(gw, model="auto:latest")
    assert "".join(line["message"]["content"] for line in lines) == "From the auto profile."
    assert lines[-1]["model"] == "auto:latest"
    assert fakes.anthropic.last_request.model == "claude-up"  # auto's classifier tier
    entry = gw.traffic()[0]
    assert (entry["profile"], entry["tier"], entry["requested_model"]) == ("auto", "an", "auto:latest")


def test_key_bound_client_sees_and_uses_only_its_profile(start_gateway: StartGateway, fakes: Fakes) -> None:
    fakes.reset()
    clients = '\n[[clients]]\nkey_env = "HA_KEY"\nprofile = "default"\nname = "home-assistant"\n'
    gw = start_gateway(fakes.config(extra=clients), env={**ENV, "HA_KEY": "ha-key"})
    auth = {"Authorization": "Bearer ha-key"}
    names = [m["name"] for m in httpx.get(gw.url + "/api/tags", headers=auth).json()["models"]]
    assert names == ["default:latest"]
    refused = httpx.post(gw.url + "/api/chat", json={"model": "auto:latest", "messages": USER}, headers=auth)
    assert refused.status_code == 403 and list(refused.json()) == ["error"]
    assert "auto" in refused.json()["error"]
    anonymous = httpx.get(gw.url + "/api/tags")
    assert anonymous.status_code == 401 and list(anonymous.json()) == ["error"]
    assert fakes.anthropic.requests_to("/v1/messages") == []
    lines = ollama_stream(gw.url + "/api/chat", {"model": "default:latest", "messages": USER}, headers=auth)
    assert lines[-1]["done"] is True and gw.traffic()[0]["client"] == "home-assistant"


@pytest.fixture(scope="module")
def awkward() -> Iterator[Fakes]:
    yield from fakes_fixture(Wire(crlf=True, split_every=3))


@pytest.mark.parametrize("tier", TRANSLATED)
def test_crlf_and_three_byte_writes_from_the_upstream_change_nothing(
    start_gateway: StartGateway, awkward: Fakes, tier: str
) -> None:
    awkward.reset()
    gw = start_gateway(awkward.config(), env=ENV)
    calls = [ToolCall("lights", {"room": "Küche"}), ToolCall("lights", {"room": "玄関"})]
    awkward.by_tier(tier).script(Reply(text="Één moment ☕", tool_calls=calls, usage=Usage(6, 5)))
    lines = chat(gw, model=tier)
    assert "".join(line["message"]["content"] for line in lines) == "Één moment ☕"
    tool_calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert [c["function"]["arguments"] for c in tool_calls] == [{"room": "Küche"}, {"room": "玄関"}]
    assert_final_line(lines[-1], tier, 6, 5)
