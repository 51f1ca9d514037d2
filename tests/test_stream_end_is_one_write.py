"""A re-encoded stream (an Anthropic or Ollama client on an OpenAI-speaking route) writes the
upstream's last read together with its own end: one write, not two, also when the router wraps the
stream to track it (priced or gated tiers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from lm_gateway.api.translate import reencode
from lm_gateway.backends import ChatStream
from lm_gateway.protocols import anthropic, sse
from lm_gateway.router.upstream import TrackedStream


def _chunk(text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return sse.encode_event(orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}))


class _Upstream(ChatStream):
    """Yields its reads; says the upstream is done before the last one, as a relay does once the
    body has wholly arrived."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        for number, read in enumerate(self._reads, 1):
            self.upstream_done = number == len(self._reads)
            yield read


class _Lease:
    def __init__(self) -> None:
        self.ended: list[bool | None] = []

    def end(self, ok: bool | None) -> None:
        self.ended.append(ok)


def _writes(stream: ChatStream) -> list[bytes]:
    async def run() -> list[bytes]:
        translator = anthropic.StreamFromOpenAI("m")
        return [piece async for piece in reencode(stream, translator, lambda message, kind: b"")]

    return asyncio.run(run())


READS = [_chunk("Hel"), _chunk("lo") + sse.encode_event("[DONE]")]


def test_the_last_read_goes_out_with_the_end_of_the_stream() -> None:
    writes = _writes(_Upstream(READS))
    assert len(writes) == 2
    assert b'"text":"lo"' in writes[1] and b"message_stop" in writes[1]


def test_a_tracked_stream_tells_when_its_upstream_is_done() -> None:
    lease = _Lease()
    tracked = TrackedStream(_Upstream(READS), cast(Any, lease), lambda stream: None)
    writes = _writes(tracked)
    assert len(writes) == 2
    assert b'"text":"lo"' in writes[1] and b"message_stop" in writes[1]
    assert lease.ended == [True]
