"""The routing tests' kit: scripted in-process backends and a rig that routes requests through the real
router (``serve``) with a config written as TOML.

A :class:`Scripted` backend answers each call with a :class:`Say`: a chosen text, delay, HTTP status
(mapped to the same ``BackendError`` the HTTP adapters raise), finish reason, tool call, logprobs,
usage, or a stream that breaks. Answers are queued per model (FIFO), else come from a function of the
request, else a default. Every call is recorded, and the most calls in flight at once is tracked.

The few tests at the end check the kit itself.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from lm_gateway.backends import Backend, BackendError, ChatStream, Completion, ProbeResult
from lm_gateway.backends.base import sse_error_event
from lm_gateway.config import BackendConfig, Config, TierConfig, load_config_text
from lm_gateway.protocols.openai import StreamAccumulator, parse_stream_event
from lm_gateway.protocols.sse import SSEDecoder
from lm_gateway.router import RoutingTable, Served, build_table, route_header, serve
from lm_gateway.traffic import TrafficEntry

GOOD = "Here is a detailed, correct and complete answer to your question."
FAST_RETRIES = "max_retries = 0\nretry_delay_ms = 1\n"


@dataclass(frozen=True)
class Say:
    """One scripted answer (or failure) of a fake backend."""

    text: str | None = GOOD
    delay: float = 0.0
    status: int | None = None
    retry_after: str | None = None
    finish: str = "stop"
    tools: bool = False
    logprobs: tuple[float, ...] | None = None
    usage: tuple[int, int] | None = (10, 20)
    broken_stream: bool = False  # a stream that fails after its first chunk


def error_for(backend: str, status: int, retry_after: str | None) -> BackendError:
    """The error the HTTP adapters raise for an upstream status (see backends/http.py)."""
    text = f"backend '{backend}' answered HTTP {status}"
    if status == 429:
        return BackendError(429, text, code="backend_rate_limited", retryable=True, retry_after=retry_after)
    if status in (408, 504):
        return BackendError(504, text, code="backend_timeout", retryable=True)
    if status >= 500:
        code = f"backend_http_{status}"
        return BackendError(
            503 if status == 503 else 502, text, code=code, retryable=True, retry_after=retry_after
        )
    return BackendError(status, text, code=f"backend_http_{status}", type_="invalid_request_error")


def completion_payload(say: Say, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": say.text}
    if say.tools:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "lights", "arguments": "{}"}}
        ]
        message["content"] = say.text or None
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": say.finish}
    if say.logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "t", "logprob": value} for value in say.logprobs]}
    payload: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "model": model,
        "choices": [choice],
    }
    if say.usage is not None:
        payload["usage"] = {"prompt_tokens": say.usage[0], "completion_tokens": say.usage[1]}
    return payload


class ScriptedStream(ChatStream):
    def __init__(self, say: Say, model: str) -> None:
        self._say = say
        self._model = model
        self.closed = False
        if say.usage is not None:
            self.prompt_tokens, self.completion_tokens = say.usage

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        say = self._say
        head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": self._model}
        try:
            words = (say.text or "").split(" ")
            for index, word in enumerate(words):
                delta: dict[str, Any] = {"content": word if index == 0 else " " + word}
                if index == 0:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                if say.logprobs is not None and index == 0:
                    choice["logprobs"] = {"content": [{"token": "t", "logprob": v} for v in say.logprobs]}
                yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
                if say.broken_stream:
                    self.error = "upstream broke off"
                    yield sse_error_event(self.error, "backend_bad_response")
                    return
                await asyncio.sleep(0)
            finish = {"index": 0, "delta": {}, "finish_reason": say.finish}
            yield b"data: " + orjson.dumps({**head, "choices": [finish]}) + b"\n\n"
            if say.usage is not None:
                usage = {"prompt_tokens": say.usage[0], "completion_tokens": say.usage[1]}
                yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.closed = True


class Scripted(Backend):
    """A fake backend answering from a script (see the module doc)."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        default: Say | None = None,
        by: Callable[[str, dict[str, Any]], Say] | None = None,
    ) -> None:
        super().__init__(config, None)
        self.default = default or Say()
        self.by = by
        self.queued: dict[str, deque[Say]] = defaultdict(deque)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.active = 0
        self.max_active = 0
        self.streams: list[ScriptedStream] = []

    def queue(self, model: str, *answers: Say) -> Scripted:
        self.queued[model].extend(answers)
        return self

    def models(self) -> list[str]:
        return [model for model, _ in self.calls]

    def _pick(self, model: str, body: dict[str, Any]) -> Say:
        self.calls.append((model, body))
        if self.queued[model]:
            return self.queued[model].popleft()
        if self.by is not None:
            return self.by(model, body)
        return self.default

    async def _wait(self, say: Say) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(say.delay)
        finally:
            self.active -= 1
        if say.status is not None:
            raise error_for(self.name, say.status, say.retry_after)

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        say = self._pick(tier.model, body)
        await self._wait(say)
        prompt, completion = say.usage if say.usage is not None else (None, None)
        return Completion(orjson.dumps(completion_payload(say, tier.model)), prompt, completion)

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        say = self._pick(tier.model, body)
        await self._wait(say)
        stream = ScriptedStream(say, tier.model)
        self.streams.append(stream)
        return stream

    async def probe(self, timeout_s: float) -> ProbeResult:
        return ProbeResult(ok=True)


# -- configs ---------------------------------------------------------------------------------------

LADDER = """
[backends.mock]
base_url = "http://mock.invalid"

[[tiers]]
name = "local:instant"
backend = "mock"
model = "instant-model"

[[tiers]]
name = "local:fast"
backend = "mock"
model = "fast-model"

[[tiers]]
name = "cloud:deep"
backend = "mock"
model = "deep-model"

[[tiers]]
name = "cloud:expert"
backend = "mock"
model = "expert-model"

[aliases]
"hint:fast" = "local:fast"
"hint:expert" = "cloud:expert"
"""


@dataclass
class Result:
    served: Served | None
    entry: TrafficEntry
    text: str = ""
    error: Exception | None = None
    chunks: list[bytes] = field(default_factory=list)

    @property
    def tier(self) -> str | None:
        return self.entry.tier

    @property
    def header(self) -> str | None:
        return route_header(self.entry)

    def steps(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [step for step in self.entry.route or () if kind is None or step.get("step") == kind]


class Rig:
    """A routing table built from TOML plus scripted backends; :meth:`ask` routes one request."""

    def __init__(self, toml: str, gateway: str = FAST_RETRIES, **backend_options: Any) -> None:
        self.config: Config = load_config_text(
            f"[gateway]\n{gateway}\n{toml}", env={"KEY": "k", "KEY2": "k2"}
        )
        self.table: RoutingTable = build_table(self.config)
        self.backends: dict[str, Scripted] = {
            name: Scripted(cfg, **backend_options) for name, cfg in self.config.backends.items()
        }

    @property
    def mock(self) -> Scripted:
        return self.backends["mock"]

    def body(self, text: str = "hello", **extra: Any) -> dict[str, Any]:
        messages = extra.pop("messages", None) or [{"role": "user", "content": text}]
        return {"model": extra.pop("model", "hint:fast"), "messages": messages, **extra}

    async def ask(
        self,
        text: str = "hello",
        *,
        stream: bool = False,
        profile: str | None = None,
        expert: bool = False,
        client: str | None = None,
        priority: int = 0,
        drain: bool = True,
        **extra: Any,
    ) -> Result:
        body = self.body(text, **extra)
        if stream:
            body["stream"] = True
        entry = TrafficEntry(
            id="t", started=0.0, client=client or "test", profile=None, requested_model=None, endpoint="/t"
        )
        try:
            served = await serve(
                self.table,
                dict(self.backends),
                body,
                bound_profile=profile,
                expert=expert,
                stream=stream,
                trace=entry,
                priority=priority,
                client=client,
            )
        except Exception as exc:
            return Result(None, entry, error=exc)
        result = Result(served, entry)
        if served.completion is not None:
            payload = orjson.loads(served.completion.body)
            result.text = payload["choices"][0]["message"]["content"] or ""
        elif served.stream is not None and drain:
            result.chunks = [chunk async for chunk in served.stream]
            result.text = stream_text(result.chunks)
        return result


def stream_text(chunks: list[bytes]) -> str:
    decoder = SSEDecoder()
    whole = StreamAccumulator()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            parsed = parse_stream_event(event)
            if parsed is not None:
                whole.add(parsed)
    content = whole.result()["choices"][0]["message"]["content"]
    return content if isinstance(content, str) else ""


def profile(mode: str, extra: str = "", name: str = "default") -> str:
    return f'\n[profiles.{name}]\nmode = "{mode}"\n{extra}\n'


# -- the kit's own tests ---------------------------------------------------------------------------


async def test_scripted_backend_answers_in_order_then_by_default() -> None:
    rig = Rig(LADDER + profile("dispatch"))
    rig.mock.queue("fast-model", Say(text="first"), Say(status=400))
    first = await rig.ask()
    second = await rig.ask()
    third = await rig.ask()
    assert first.text == "first"
    assert isinstance(second.error, BackendError) and second.error.status == 400
    assert third.text == GOOD
    assert rig.mock.models() == ["fast-model"] * 3


async def test_scripted_stream_round_trips_its_text() -> None:
    rig = Rig(LADDER + profile("dispatch"))
    result = await rig.ask(stream=True)
    assert result.text == GOOD
    assert result.chunks[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("status", [429, 500, 503, 504])
def test_error_mapping_marks_upstream_trouble_retryable(status: int) -> None:
    assert error_for("b", status, None).retryable
