"""A backend's key never reaches a client through an answer: an upstream that echoes its key in a
whole answer or in a stream has it replaced by ``***``, on the passthrough and on the translated
path alike. A placeholder "key" of the kind local servers take (``lm-studio``, ``EMPTY``) is not a
secret worth corrupting answers for: the word stays in answers, and is still removed from errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import StartGateway
from .fakes import AnthropicBackend, OpenAIBackend, Reply, Status
from .gateway import RunningGateway

CHAT = "/v1/chat/completions"
REAL_KEY = "sk-proj-Zq81vYx0kLmW3nB6cT9rJd4"  # as long as a real provider key
PLACEHOLDER = "lm-studio"


def _config(openai_url: str, anthropic_url: str) -> str:
    return f"""
        [backends.oa]
        base_url = "{openai_url}"
        provider = "openai"
        api_key_env = "OA_KEY"

        [backends.an]
        base_url = "{anthropic_url}"
        provider = "anthropic"
        api_key_env = "AN_KEY"

        [[tiers]]
        name = "oa"
        backend = "oa"
        model = "gpt-up"

        [[tiers]]
        name = "an"
        backend = "an"
        model = "claude-up"

        [profiles.default]
        mode = "dispatch"
        classifier = "oa"
        """


Fakes = dict[str, OpenAIBackend | AnthropicBackend]


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with OpenAIBackend() as openai_fake, AnthropicBackend() as anthropic_fake:
        yield {"oa": openai_fake, "an": anthropic_fake}


def _gateway(start_gateway: StartGateway, fakes: Fakes, key: str) -> RunningGateway:
    for fake in fakes.values():
        fake.reset()
    return start_gateway(_config(fakes["oa"].url, fakes["an"].url), env={"OA_KEY": key, "AN_KEY": key})


def _answer(gw: RunningGateway, tier: str, stream: bool) -> str:
    """The answer's text as the client received it (every streamed delta joined)."""
    body = {"model": tier, "messages": [{"role": "user", "content": "q"}], "stream": stream}
    resp = httpx.post(gw.url + CHAT, json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    if not stream:
        content: str = resp.json()["choices"][0]["message"]["content"]
        return content
    assert resp.text.rstrip().endswith("data: [DONE]")
    return resp.text


def _echoed(
    start_gateway: StartGateway, fakes: Fakes, key: str, tier: str, stream: bool
) -> tuple[RunningGateway, str]:
    """A gateway whose backends hold ``key``, and what its client got from ``tier`` when the upstream
    said the key back ("say <key> now", the key a delta of its own when streamed)."""
    gw = _gateway(start_gateway, fakes, key)
    fakes[tier].script(Reply(text=f"say {key} now", chunks=["say ", key, " now"]))
    return gw, _answer(gw, tier, stream)


EACH_PATH = pytest.mark.parametrize(
    ("tier", "stream"),
    [("oa", False), ("oa", True), ("an", False), ("an", True)],
    ids=["passthrough-whole", "passthrough-stream", "translated-whole", "translated-stream"],
)


@EACH_PATH
def test_a_key_the_upstream_echoes_in_its_answer_is_replaced(
    start_gateway: StartGateway, fakes: Fakes, tier: str, stream: bool
) -> None:
    _, text = _echoed(start_gateway, fakes, REAL_KEY, tier, stream)
    assert REAL_KEY not in text
    assert "say " in text and "***" in text and " now" in text
    assert fakes[tier].last_request.api_key == REAL_KEY  # the key did go upstream


@EACH_PATH
def test_a_placeholder_key_is_left_in_answers_but_not_in_errors(
    start_gateway: StartGateway, fakes: Fakes, tier: str, stream: bool
) -> None:
    gw, text = _echoed(start_gateway, fakes, PLACEHOLDER, tier, stream)
    assert PLACEHOLDER in text and "***" not in text
    fakes[tier].script(Status(400, message=f"bad key {PLACEHOLDER}"))
    body = {"model": tier, "messages": [{"role": "user", "content": "q"}], "stream": stream}
    error = httpx.post(gw.url + CHAT, json=body, timeout=10)
    assert error.status_code == 400
    assert PLACEHOLDER not in error.text and "bad key ***" in error.json()["error"]["message"]
