"""Ollama upstreams through the native API (``/api/chat``).

Native rather than Ollama's OpenAI-compatible endpoint because only the native API honours
``options`` (``default_options`` such as ``num_ctx``), ``think``, ``keep_alive`` and base64 images,
and returns tool calls reliably. Ollama clients (Home Assistant, Open WebUI) are forwarded untouched
(``forward``); OpenAI-compatible extras (``/v1/embeddings``, ``/v1/completions``) go to Ollama's
``/v1`` endpoints as they are. Health is ``GET /api/tags``: it lists the installed models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from lm_gateway.backends.base import ChatStream, Completion, ProbeResult
from lm_gateway.backends.http import (
    OPENAI_SSE,
    HttpBackend,
    RawRelay,
    RelayFormat,
    TranslatedStream,
    last_json,
    usage_from,
    wants_usage,
)
from lm_gateway.config.schema import BackendConfig, Secret, TierConfig
from lm_gateway.protocols import ollama as wire
from lm_gateway.protocols.ndjson import encode_line

CHAT = "/api/chat"
NATIVE_PATHS = (CHAT, "/api/generate", "/api/embed", "/api/embeddings")
COMPAT_PATHS = ("/v1/embeddings", "/v1/completions", "/v1/chat/completions")


_COUNT = re.compile(rb'"(prompt_eval_count|eval_count)"[ \t]*:[ \t]*(\d+)')


def _ollama_usage(kept: bytes) -> tuple[int | None, int | None]:
    """The counts of the final (``done``) object; read with a pattern, not a parser, because that
    line may start before the relay's window (``/api/generate`` puts a long ``context`` first)."""
    prompt = completion = None
    for name, value in _COUNT.findall(kept):  # (one pass: a count never spans lines)
        if name == b"prompt_eval_count":
            prompt = int(value)
        else:
            completion = int(value)
    return prompt, completion


def _is_done(tail: bytes) -> bool:
    payload = last_json(tail)
    return isinstance(payload, dict) and payload.get("done") is True


OLLAMA_NDJSON = RelayFormat(
    name="ollama",
    ends_properly=_is_done,
    read_usage=_ollama_usage,
    usage_marker=b"eval_count",
    error_frame=lambda message, code: encode_line(wire.error_line(message)),
    event_end=b"\n",
)


class OllamaBackend(HttpBackend):
    protocol = "ollama"

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        super().__init__(config, key)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key is not None:  # Ollama behind an authenticating proxy
            headers["Authorization"] = f"Bearer {key.reveal()}"
        self._headers = self.prepare(headers)

    def _native(self, body: dict[str, Any], tier: TierConfig, stream: bool) -> bytes:
        request = wire.chat_request_from_openai(
            body, model=tier.model, default_options=self.config.default_options
        )
        request["stream"] = stream
        return orjson.dumps(request)

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        _raw, payload = await self.post_json(CHAT, self._native(body, tier, False), self._headers)
        if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
            raise self.bad_response("returned JSON that is not a chat response")
        answer = wire.chat_response_to_openai(payload, model=tier.model)
        prompt, completion = usage_from(answer)
        return Completion(orjson.dumps(answer), prompt, completion)

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        resp = await self.open_stream(CHAT, self._native(body, tier, True), self._headers)
        translator = wire.ChatStreamToOpenAI(include_usage=wants_usage(body), model=tier.model)
        return TranslatedStream(self, resp, translator)

    async def forward(
        self, path: str, body: dict[str, Any], stream: bool, headers: Mapping[str, str] | None = None
    ) -> Completion | ChatStream:
        if path not in NATIVE_PATHS and path not in COMPAT_PATHS:
            return await super().forward(path, body, stream, headers)
        if self.config.default_options and path in NATIVE_PATHS:
            options = body.get("options")
            body["options"] = {
                **self.config.default_options,
                **(options if isinstance(options, dict) else {}),
            }
        if stream:
            # Ollama's /v1 endpoints stream OpenAI SSE, its native ones NDJSON.
            fmt = OPENAI_SSE if path in COMPAT_PATHS else OLLAMA_NDJSON
            resp = await self.open_stream(path, orjson.dumps(body), self._headers)
            return RawRelay(self, resp, fmt)
        raw, payload = await self.post_json(path, orjson.dumps(body), self._headers)
        if path in COMPAT_PATHS:
            prompt, completion = usage_from(payload)
        else:
            prompt, completion = _ollama_usage(raw)
        return Completion(raw, prompt, completion)

    async def probe(self, timeout_s: float) -> ProbeResult:
        return await self.get_probe("/api/tags", timeout_s, self._headers)
