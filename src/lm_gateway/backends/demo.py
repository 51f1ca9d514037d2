"""Backends that answer locally, without any network or model.

``demo`` exists so that a fresh install works end to end (curl, SDKs, dashboard) before any real
backend is configured; ``reply``-mode profiles use the same machinery to return their fixed message.
Answers are deterministic, so tests and docs can show them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from lm_gateway.backends.base import Backend, ChatStream, Completion, ProbeResult
from lm_gateway.config.schema import BackendConfig, Provider, TierConfig
from lm_gateway.protocols.openai import last_user_text

GREETING = "Hello from lm-gateway's built-in demo backend."


def demo_answer(body: dict[str, Any]) -> str:
    last = _last_user_text(body.get("messages"))
    if not last:
        return GREETING + " Configure a real backend to get real answers."
    quoted = last if len(last) <= 200 else last[:200] + "..."
    return f"{GREETING} You said: {quoted}"


def _last_user_text(messages: Any) -> str:
    return last_user_text(messages).strip()


def _count_words(text: str) -> int:
    return len(text.split())


class LocalAnswerBackend(Backend):
    """Answers with ``answer(body)`` as a chat completion or a word-by-word stream."""

    def __init__(self, config: BackendConfig, answer: Callable[[dict[str, Any]], str]) -> None:
        super().__init__(config, None)
        self._answer = answer

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        text = self._answer(body)
        prompt, completion = _count_words(_last_user_text(body.get("messages"))), _count_words(text)
        payload = {
            "id": f"chatcmpl-local-{time.time_ns():x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": tier.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        return Completion(orjson.dumps(payload), prompt, completion)

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        return _WordStream(body, self._answer(body), tier.model)

    async def probe(self, timeout_s: float) -> ProbeResult:
        return ProbeResult(ok=True, models=["demo"] if self.config.provider is Provider.DEMO else [])


def demo_backend(config: BackendConfig) -> LocalAnswerBackend:
    return LocalAnswerBackend(config, demo_answer)


def reply_backend(text: str) -> LocalAnswerBackend:
    """The pseudo-backend behind a ``reply``-mode profile: always the profile's fixed message."""
    config = BackendConfig(name="reply", base_url="http://reply.invalid", provider=Provider.DEMO)
    return LocalAnswerBackend(config, lambda _body: text)


class _WordStream(ChatStream):
    def __init__(self, body: dict[str, Any], text: str, model: str) -> None:
        self._text = text
        self._model = model
        options = body.get("stream_options")
        self._include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.prompt_tokens = _count_words(_last_user_text(body.get("messages")))
        self.completion_tokens = _count_words(text)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        head: dict[str, Any] = {"id": f"chatcmpl-local-{time.time_ns():x}", "object": "chat.completion.chunk"}
        head |= {"created": int(time.time()), "model": self._model}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

        def delta(content: str, finish: str | None = None) -> list[dict[str, Any]]:
            piece: dict[str, Any] = {"content": content} if content or finish is None else {}
            return [{"index": 0, "delta": piece, "finish_reason": finish}]

        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for position, word in enumerate(self._text.split(" ")):
            yield event(delta(word if position == 0 else " " + word))
        yield event(delta("", "stop"))
        if self._include_usage:
            prompt, completion = self.prompt_tokens or 0, self.completion_tokens or 0
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"
