"""Anthropic Messages API upstream.

Not implemented in this version: the translation layer lands with the protocols work. Requests
routed to an Anthropic backend get a clear 501 instead of a confusing upstream error.
"""

from __future__ import annotations

from typing import Any

from lm_gateway.backends.base import Backend, BackendError, ChatStream, Completion, ProbeResult
from lm_gateway.config.schema import TierConfig


class AnthropicBackend(Backend):
    def _unsupported(self) -> BackendError:
        return BackendError(
            501,
            f"backend '{self.name}': the anthropic provider is not supported by this version yet",
            code="provider_not_supported",
            type_="server_error",
        )

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        raise self._unsupported()

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        raise self._unsupported()

    async def probe(self, timeout_s: float) -> ProbeResult:
        return ProbeResult(ok=False, detail="the anthropic provider is not supported by this version yet")
