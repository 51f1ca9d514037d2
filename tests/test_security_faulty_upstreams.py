"""Upstreams that misbehave on command each give the documented client-facing result within the
configured timeouts, in the client protocol's error shape, and afterwards the gateway's open
connections, tasks and memory are back at their baseline.

Documented results (timeout_ms = 800 here):

=========================================  ==================================================
upstream                                   client gets
=========================================  ==================================================
refuses connections / drops the socket     502 ``backend_unreachable``
hangs before headers                       504 ``backend_timeout`` (within timeout_ms)
drips a buffered body slowly               504 ``backend_timeout`` (within timeout_ms)
sends a body that never ends (buffered)    504 ``backend_timeout``
drips a stream                             200, relayed as it comes
429 / 500 / 503 / 529                      429 / 502 / 503 / 503, ``Retry-After`` kept when numeric
invalid JSON, HTML, empty body             502 ``backend_bad_response``
invalid UTF-8 (buffered)                   502 ``backend_bad_response``
a body over 64 MiB (declared or not)       502 ``backend_response_too_large``
a huge error body                          502, only its first 64 KiB read
a stream cut mid-event                     200, then the protocol's in-stream error event
a stream that never ends                   200, relayed until the client leaves; upstream cancelled
=========================================  ==================================================
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fakes.openai_backend import OpenAIBackend
from .fakes.script import (
    HTML,
    Behaviour,
    CutStream,
    Drop,
    EmptyBody,
    Garbage,
    Hang,
    InvalidUTF8,
    NeverEndingStream,
    Reply,
    Slow,
    Status,
)
from .fakes.threaded import ServerThread
from .gateway import RunningGateway, config_text

CHAT = "/v1/chat/completions"
QUESTION = {"model": "fake", "messages": [{"role": "user", "content": "q"}]}
TIMEOUT_S = 0.8

Respond = Callable[[asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """An upstream that answers every request with ``respond`` (raw bytes the aiohttp fakes cannot
    send: a false Content-Length, a 100 MB body)."""

    def __init__(self) -> None:
        self.port = 0
        self.respond: Respond | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            assert self.respond is not None
            await self.respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def declared_huge(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200000000\r\n\r\n{")
    await writer.drain()
    await asyncio.sleep(5)


async def chunked_huge(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b" " * (1024 * 1024)
    chunk = b"%x\r\n%b\r\n" % (len(piece), piece)
    for _ in range(80):  # 80 MiB of JSON whitespace, as fast as the gateway reads it
        writer.write(chunk)
        await writer.drain()


async def huge_error(writer: asyncio.StreamWriter) -> None:
    body = b'{"error": {"message": "' + b"e" * (10 * 1024 * 1024) + b'"}}'
    writer.write(
        b"HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    writer.write(body)
    await writer.drain()


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIBackend]:
    with OpenAIBackend() as backend:
        yield backend


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    with ServerThread(upstream, name="raw-upstream"):
        yield upstream


class Baseline:
    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.tasks = 0
        self.memory = 0


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, fake: OpenAIBackend, raw: RawUpstream
) -> Iterator[RunningGateway]:
    path: Path = tmp_path_factory.mktemp("faulty") / "config.toml"
    path.write_text(
        config_text(
            f"""
            [backends.fake]
            base_url = "{fake.url}"
            timeout_ms = {int(TIMEOUT_S * 1000)}

            [backends.raw]
            base_url = "http://127.0.0.1:{raw.port}"
            timeout_ms = 3000

            [[tiers]]
            name = "fake"
            backend = "fake"
            model = "m"

            [[tiers]]
            name = "raw"
            backend = "raw"
            model = "m"

            [profiles.default]
            mode = "dispatch"
            classifier = "fake"
            """,
            # Each fault must reach the upstream: no circuit breaker opening after a few of them.
            gateway_extra="health_window = 0\n",
        )
    )
    gateway = RunningGateway(path, {}).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def baseline(gw: RunningGateway, fake: OpenAIBackend) -> Baseline:
    """Taken after a few ordinary requests (pools warm), before any fault."""
    tracemalloc.start()
    for body in (QUESTION, {**QUESTION, "stream": True}):
        assert httpx.post(gw.url + CHAT, json=body).status_code == 200
    settle(gw)
    snapshot = Baseline(gw)
    snapshot.tasks = gateway_tasks(gw)
    snapshot.memory = traced_memory()
    return snapshot


def gateway_tasks(gw: RunningGateway) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return gw.thread.call(count)


def traced_memory() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def settle(gw: RunningGateway, timeout: float = 5.0) -> None:
    """Until no client connection and no busy upstream connection is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = sum(pool_busy(backend) for backend in gw.gateway.state.backends.values())
        if busy == 0 and not gw.gateway.client_server.connections and not gw.gateway.traffic.in_flight:
            return
        time.sleep(0.02)
    raise AssertionError("the gateway did not settle")


def pool_busy(backend: Any) -> int:
    pool = backend.pool
    return int(pool.connections_open - pool.idle_count)


def post(
    gw: RunningGateway, body: dict[str, Any] = QUESTION, path: str = CHAT
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = httpx.post(gw.url + path, json=body, timeout=15)
    return resp, time.monotonic() - started


def error_code(resp: httpx.Response) -> str:
    payload = resp.json()
    assert "Traceback" not in resp.text
    return str(payload["error"]["code"])


@pytest.mark.parametrize(
    ("behaviour", "status", "code", "within"),
    [
        # Twice: a connection dropped on reuse counts as a stale keep-alive and is retried once.
        ((Drop(), Drop()), 502, "backend_unreachable", 1.0),
        (Hang(10), 504, "backend_timeout", TIMEOUT_S + 0.7),
        (Slow(interval=0.1, size=1), 504, "backend_timeout", TIMEOUT_S + 0.7),
        (NeverEndingStream(interval=0.05), 504, "backend_timeout", TIMEOUT_S + 0.7),
        (Status(429), 429, "backend_rate_limited", 1.0),
        (Status(500), 502, "backend_http_500", 1.0),
        (Status(503), 503, "backend_http_503", 1.0),
        (Status(529), 503, "backend_http_529", 1.0),
        (Garbage(b"{not json"), 502, "backend_bad_response", 1.0),
        (HTML(status=200), 502, "backend_bad_response", 1.0),
        (EmptyBody(), 502, "backend_bad_response", 1.0),
        (InvalidUTF8(), 502, "backend_bad_response", 1.0),
    ],
    ids=[
        "drop",
        "hang",
        "drip",
        "endless-body",
        "429",
        "500",
        "503",
        "529",
        "invalid-json",
        "html",
        "empty",
        "invalid-utf8",
    ],
)
def test_buffered_faults_give_the_documented_error_in_time(
    gw: RunningGateway,
    fake: OpenAIBackend,
    baseline: Baseline,
    behaviour: Behaviour | tuple[Behaviour, ...],
    status: int,
    code: str,
    within: float,
) -> None:
    fake.script(*(behaviour if isinstance(behaviour, tuple) else (behaviour,)))
    resp, took = post(gw)
    assert resp.status_code == status, resp.text
    assert error_code(resp) == code
    assert took < within
    assert "retry-after" not in resp.headers  # none was sent


@pytest.mark.parametrize(("upstream", "client"), [(429, 429), (500, 502), (503, 503), (529, 503)])
def test_retry_after_is_kept_when_the_upstream_sends_one(
    gw: RunningGateway, fake: OpenAIBackend, baseline: Baseline, upstream: int, client: int
) -> None:
    fake.script(Status(upstream, headers={"Retry-After": "7"}))
    resp, _ = post(gw)
    assert resp.status_code == client and resp.headers["retry-after"] == "7"
    fake.script(Status(upstream, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    resp, _ = post(gw)
    assert resp.status_code == client and "retry-after" not in resp.headers  # only whole seconds


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/messages", {**QUESTION, "max_tokens": 5}, "anthropic"),
        ("/api/chat", {**QUESTION, "stream": False}, "ollama"),
    ],
)
def test_faults_reach_other_protocols_in_their_own_shape(
    gw: RunningGateway, fake: OpenAIBackend, baseline: Baseline, path: str, body: dict[str, Any], shape: str
) -> None:
    for behaviour, status in ((Status(503), 503), (Hang(10), 504), (Garbage(b"<"), 502)):
        fake.script(behaviour)
        resp, took = post(gw, body, path)
        assert resp.status_code == status and took < TIMEOUT_S + 0.7
        payload = resp.json()
        if shape == "anthropic":
            assert payload["type"] == "error" and payload["error"]["message"]
        else:
            assert set(payload) == {"error"} and isinstance(payload["error"], str)


@pytest.mark.parametrize(
    ("respond", "code"),
    [
        (declared_huge, "backend_response_too_large"),
        (chunked_huge, "backend_response_too_large"),
        (huge_error, "backend_response_too_large"),
    ],
    ids=["declared", "chunked", "error-body"],
)
def test_huge_bodies_are_refused_not_buffered(
    gw: RunningGateway, raw: RawUpstream, baseline: Baseline, respond: Respond, code: str
) -> None:
    raw.respond = respond
    resp, took = post(gw, {**QUESTION, "model": "raw"})
    assert resp.status_code == 502 and error_code(resp) == code
    assert took < 3


def test_streamed_faults(gw: RunningGateway, fake: OpenAIBackend, baseline: Baseline) -> None:
    stream = {**QUESTION, "stream": True}
    fake.script(Slow(interval=0.01, size=40, reply=Reply(text="drip " * 20)))
    resp, _ = post(gw, stream)
    assert resp.status_code == 200 and "[DONE]" in resp.text  # a drip is relayed as it comes
    fake.script(CutStream(after=2, reply=Reply(text="a b c d e f")))
    resp, _ = post(gw, stream)
    assert resp.status_code == 200 and "backend_bad_response" in resp.text.splitlines()[-2]
    fake.script(InvalidUTF8())
    resp, _ = post(gw, stream)
    assert resp.status_code == 200
    fake.script(NeverEndingStream(interval=0.02))
    with httpx.stream("POST", gw.url + CHAT, json=stream, timeout=10) as endless:
        received = 0
        for chunk in endless.iter_bytes():
            received += len(chunk)
            if received > 2000:
                break
    fake.wait_until(lambda: fake.disconnects >= 1)


def test_connections_tasks_and_memory_return_to_baseline(gw: RunningGateway, baseline: Baseline) -> None:
    """Runs last in this module: after every fault above, nothing is left behind."""
    settle(gw)
    assert gateway_tasks(gw) <= baseline.tasks
    for name, backend in gw.gateway.state.backends.items():
        pool = backend.pool  # type: ignore[attr-defined]
        assert pool.connections_open - pool.idle_count == 0, name
        assert pool.idle_count <= 2, name
    assert gw.gateway.traffic.in_flight == 0 and gw.gateway.traffic.open_streams == 0
    grown = traced_memory() - baseline.memory
    tracemalloc.stop()
    assert grown < 4 * 1024 * 1024, f"{grown} bytes still allocated after the faults"
