"""An upstream stream of the right protocol but the wrong shape, on a translated path: the client gets
its protocol's error event, never a dropped connection (the translators meet an object where a string
belongs, a string where an object belongs)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import StartGateway
from .fakes.anthropic_backend import AnthropicBackend
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Garbage
from .gateway import openai_backend_config

SSE = "text/event-stream"
BAD_OPENAI_CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":"oops"}]}\n\n'
)
BAD_ANTHROPIC_START = b'event: message_start\ndata: {"type":"message_start","message":"oops"}\n\n'


@pytest.fixture
def anthropic() -> Iterator[AnthropicBackend]:
    with AnthropicBackend() as backend:
        yield backend


def test_anthropic_client_gets_an_error_event_for_a_malformed_openai_stream(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Garbage(BAD_OPENAI_CHUNK + b"data: [DONE]\n\n", content_type=SSE))
    body = {
        "model": "hint:fast",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = httpx.post(gw.url + "/v1/messages", json=body, timeout=10)
    assert resp.status_code == 200
    assert "event: error" in resp.text and "malformed" in resp.text
    assert "AttributeError" in resp.text and "object has no attribute" not in resp.text


def test_openai_client_gets_an_error_event_for_a_malformed_anthropic_stream(
    start_gateway: StartGateway, anthropic: AnthropicBackend
) -> None:
    config = f"""
        [backends.an]
        provider = "anthropic"
        base_url = "{anthropic.url}"
        api_key_env = "AN_KEY"

        [[tiers]]
        name = "t:an"
        backend = "an"
        model = "claude-fake"

        [profiles.default]
        mode = "dispatch"
        classifier = "t:an"
        """
    gw = start_gateway(config, env={"AN_KEY": "k"})
    anthropic.script(Garbage(BAD_ANTHROPIC_START, content_type=SSE))
    body = {"model": "t:an", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200
    assert '"error"' in resp.text and "malformed" in resp.text
