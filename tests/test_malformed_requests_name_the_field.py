"""A request whose JSON has the wrong shape for the translation it needs (a string where the tool
calls go, a number for a text) gets a 400 in its own protocol's error shape that names the field to
fix, on each client API and translation direction, not Python's words for the failure; and the
gateway does not log it as a failure of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lm_gateway.protocols.openai import CHAT_REQUEST
from lm_gateway.protocols.shapes import first_problem

from .cross_protocol import ENV, Fakes
from .gateway import RunningGateway, config_text

USER = [{"role": "user", "content": "hi"}]
CALL_TURN = [*USER, {"role": "assistant", "tool_calls": "not a list"}]

CASES: list[tuple[str, dict[str, Any], str]] = [
    # OpenAI clients, translated for an Anthropic or an Ollama tier
    (
        "/v1/chat/completions",
        {"model": "an", "messages": CALL_TURN},
        "messages[1].tool_calls must be an array of tool calls",
    ),
    (
        "/v1/chat/completions",
        {"model": "ol", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text must be a string",
    ),
    (
        "/v1/chat/completions",
        {"model": "an", "messages": [{"role": "user", "content": 5}]},
        "messages[0].content must be a string or an array of content parts",
    ),
    (
        "/v1/chat/completions",
        {"model": "an", "messages": USER, "tools": [{"type": "function", "function": 5}]},
        "tools[0].function must be an object with a string 'name'",
    ),
    (
        "/v1/chat/completions",
        {"model": "ol", "messages": USER, "response_format": {"type": "json_schema", "json_schema": 5}},
        "response_format.json_schema must be an object",
    ),
    # Anthropic clients, translated for an OpenAI tier
    (
        "/v1/messages",
        {
            "model": "oa",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}
            ],
        },
        "messages[0].content[0].content must be a string or an array of content blocks",
    ),
    (
        "/v1/messages",
        {"model": "oa", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]},
        "messages[0].content must be a string or an array of content blocks",
    ),
    (
        "/v1/messages/count_tokens",
        {"model": "oa", "messages": USER, "tools": 5},
        "tools must be an array of tools",
    ),
    # Ollama clients, translated for an Anthropic tier
    (
        "/api/chat",
        {"model": "an", "messages": [{"role": "user", "content": "x", "images": 5}], "stream": False},
        "messages[0].images must be an array of base64 strings",
    ),
    (
        "/api/chat",
        {"model": "an", "messages": USER, "options": "fast", "stream": False},
        "options must be an object",
    ),
    (
        "/api/chat",
        {"model": "an", "messages": [{"role": "user", "content": 5}], "stream": False},
        "messages[0].content must be a string",
    ),
    ("/api/generate", {"model": "an", "prompt": 5, "stream": False}, "prompt must be a string"),
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with Fakes() as fakes:
        path = tmp_path_factory.mktemp("shapes") / "config.toml"
        path.write_text(config_text(fakes.config()))
        gateway = RunningGateway(path, ENV).start()
        try:
            yield gateway
        finally:
            gateway.stop()


def _message(path: str, payload: Any) -> str:
    """The error message, from each protocol's own error shape."""
    if path.startswith("/api/"):
        assert list(payload) == ["error"]
        return str(payload["error"])
    if path.startswith("/v1/messages"):
        assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
    return str(payload["error"]["message"])


@pytest.mark.parametrize(("path", "body", "field"), CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_a_field_of_the_wrong_shape_is_named(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture, path: str, body: dict[str, Any], field: str
) -> None:
    caplog.set_level(logging.WARNING)
    resp = httpx.post(gw.url + path, json=body, timeout=10)
    assert resp.status_code == 400, resp.text
    message = _message(path, resp.json())
    assert field in message
    for python_words in ("object has no attribute", "is not iterable", "expected str instance", "Error:"):
        assert python_words not in message
    assert "could not be translated" not in caplog.text  # a client's mistake, not the gateway's


def test_absent_and_null_fields_are_never_a_problem_and_true_is_not_a_number() -> None:
    assert (
        first_problem({"messages": [{"role": "user", "content": None}], "tools": None}, CHAT_REQUEST) is None
    )
    assert first_problem({"max_tokens": True}, CHAT_REQUEST) == "max_tokens must be an integer"
    assert first_problem({"temperature": 1}, CHAT_REQUEST) is None  # an integer is a number
    assert first_problem({"stop": ["a", 2]}, CHAT_REQUEST) == "stop[1] must be a string"
