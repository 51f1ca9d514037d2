"""What the cross-protocol tests share: one fake per wire format and a gateway config that puts a
tier on each, so any client protocol can be pointed at any backend protocol by naming a tier.

Tiers (``model`` names for the clients) and what the upstream is told::

    oa  -> the OpenAI fake     as "gpt-up"
    an  -> the Anthropic fake  as "claude-up"   (the gateway holds the Anthropic key)
    ol  -> the Ollama fake     as "llama-up"
    dm  -> the built-in demo backend

Profiles: ``default`` (classifier ``ol``) and ``auto`` (classifier ``an``), so ``auto:latest`` is a
model to Ollama clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx

from .fakes import AnthropicBackend, OllamaBackend, OpenAIBackend, Wire

ANTHROPIC_KEY = "sk-ant-gateway-held-key"
ENV = {"ANTHROPIC_KEY": ANTHROPIC_KEY}
UPSTREAM_MODEL = {"oa": "gpt-up", "an": "claude-up", "ol": "llama-up", "dm": "demo"}


class Fakes:
    """The three fakes, each in its own thread (the official SDKs are synchronous)."""

    def __init__(self, wire: Wire | None = None) -> None:
        self.openai = OpenAIBackend(wire=wire)
        self.anthropic = AnthropicBackend(wire=wire, api_key=ANTHROPIC_KEY)
        self.ollama = OllamaBackend(wire=wire)
        self._stack = ExitStack()

    def __enter__(self) -> Fakes:
        for fake in (self.openai, self.anthropic, self.ollama):
            self._stack.enter_context(fake)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def by_tier(self, tier: str) -> OpenAIBackend | AnthropicBackend | OllamaBackend:
        return {"oa": self.openai, "an": self.anthropic, "ol": self.ollama}[tier]

    def reset(self) -> None:
        for fake in (self.openai, self.anthropic, self.ollama):
            fake.reset()

    def config(self, extra: str = "", profile_extra: str = "") -> str:
        """The gateway config; ``profile_extra`` goes into ``[profiles.default]``, ``extra`` at the end."""
        return (
            f"""
            [backends.openai]
            base_url = "{self.openai.url}"
            provider = "openai"

            [backends.claude]
            base_url = "{self.anthropic.url}"
            provider = "anthropic"
            api_key_env = "ANTHROPIC_KEY"

            [backends.ollama]
            base_url = "{self.ollama.url}"
            provider = "ollama"

            [backends.demo]
            base_url = "http://demo.invalid"
            provider = "demo"

            [[tiers]]
            name = "oa"
            backend = "openai"
            model = "gpt-up"

            [[tiers]]
            name = "an"
            backend = "claude"
            model = "claude-up"

            [[tiers]]
            name = "ol"
            backend = "ollama"
            model = "llama-up"

            [[tiers]]
            name = "dm"
            backend = "demo"
            model = "demo"

            [aliases]
            "hint:fast" = "ol"

            [profiles.default]
            mode = "dispatch"
            classifier = "ol"
            {profile_extra}

            [profiles.auto]
            mode = "dispatch"
            classifier = "an"
            """
            + extra
        )


def fakes_fixture(wire: Wire | None = None) -> Iterator[Fakes]:
    """Body of a module-scoped fixture: the fakes, started once per test module."""
    with Fakes(wire) as fakes:
        yield fakes


def ndjson_lines(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON objects of an NDJSON body, as an Ollama client reads them (one per line)."""
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def ollama_stream(url: str, body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """POST an Ollama request and read the NDJSON answer line by line as it streams."""
    lines: list[dict[str, Any]] = []
    with httpx.stream("POST", url, json=body, timeout=10, **kwargs) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        for line in resp.iter_lines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER_PARAMS},
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": WEATHER_PARAMS,
}


SUNNY = ["Sun", "ny", " and", " warm"]
"""Streamed deltas for the mid-stream failure tests: the first two make ``Sunny``."""


def after_two_deltas(tier: str) -> int:
    """How many events each fake sends up to and including its second text delta (so a fault
    scripted ``after`` that many strikes once ``Sunny`` went out): OpenAI sends a role chunk first,
    Anthropic ``message_start``, ``content_block_start`` and ``ping``, Ollama nothing."""
    return {"oa": 3, "an": 5, "ol": 2}[tier]
