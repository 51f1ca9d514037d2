"""Backend adapters: one per upstream kind, all behind :class:`~lm_gateway.backends.base.Backend`."""

from __future__ import annotations

from lm_gateway.backends.base import Backend, BackendError, ChatStream, Completion, ProbeResult
from lm_gateway.config.schema import BackendConfig, Provider, Secret


def build_backend(config: BackendConfig, key: Secret | None) -> Backend:
    """The adapter for a backend's provider (imports stay lazy so a demo-only gateway starts fast)."""
    if config.provider is Provider.DEMO:
        from lm_gateway.backends.demo import demo_backend

        return demo_backend(config)
    if config.provider is Provider.OLLAMA:
        from lm_gateway.backends.ollama import OllamaBackend

        return OllamaBackend(config, key)
    if config.provider is Provider.ANTHROPIC:
        from lm_gateway.backends.anthropic import AnthropicBackend

        return AnthropicBackend(config, key)
    from lm_gateway.backends.openai import OpenAIBackend

    return OpenAIBackend(config, key)


__all__ = ["Backend", "BackendError", "ChatStream", "Completion", "ProbeResult", "build_backend"]
