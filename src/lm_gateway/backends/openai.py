"""OpenAI-compatible upstreams (OpenAI, OpenRouter, vLLM, llama.cpp, LM Studio, Ollama's /v1 ...).

Same protocol in and out, so the request body is forwarded as the client sent it (only ``model``
rewritten by the router) and the response bytes are relayed untouched: nothing a provider adds is
lost, and nothing is re-encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from lm_gateway.backends.base import ChatStream, Completion, ProbeResult
from lm_gateway.backends.http import HttpBackend, RawRelay, usage_from
from lm_gateway.config.schema import BackendConfig, Provider, Secret, TierConfig

# OpenRouter ranks apps by these; harmless for everyone else, so only sent to OpenRouter.
OPENROUTER_HEADERS = {"HTTP-Referer": "https://github.com/lm-gateway/lm-gateway", "X-Title": "lm-gateway"}


class OpenAIBackend(HttpBackend):
    chat_path = "/v1/chat/completions"
    probe_path = "/v1/models"

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        super().__init__(config, key)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key.reveal()}"
        if config.provider is Provider.OPENROUTER:
            headers.update(OPENROUTER_HEADERS)
        self._headers = self.prepare(headers)
        self._stream_headers = self.prepare({**headers, "Accept": "text/event-stream"})

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        raw, payload = await self.post_json(self.chat_path, orjson.dumps(body), self._headers)
        if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
            raise self.bad_response("returned JSON that is not a chat completion")
        prompt, completion = usage_from(payload)
        return Completion(raw, prompt, completion)

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        resp = await self.open_stream(self.chat_path, orjson.dumps(body), self._stream_headers)
        return RawRelay(self, resp)

    async def forward(
        self, path: str, body: dict[str, Any], stream: bool, headers: Mapping[str, str] | None = None
    ) -> Completion | ChatStream:
        """OpenAI-protocol endpoints other than chat (``/v1/embeddings``, ``/v1/completions``)."""
        if stream:
            return RawRelay(self, await self.open_stream(path, orjson.dumps(body), self._stream_headers))
        raw, payload = await self.post_json(path, orjson.dumps(body), self._headers)
        prompt, completion = usage_from(payload)
        return Completion(raw, prompt, completion)

    async def probe(self, timeout_s: float) -> ProbeResult:
        return await self.get_probe(self.probe_path, timeout_s, self._headers)
