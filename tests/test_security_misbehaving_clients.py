"""Clients that misbehave: slowloris, thousands of idle connections, clients that disconnect mid-request
or mid-stream (the upstream request is cancelled, as the fake backend sees), clients that stop reading.
Each is cut off within the configured timeouts while everyone else keeps being served normally."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import statistics
import time

import httpx
import pytest

from .conftest import StartGateway
from .fakes.anthropic_backend import AnthropicBackend
from .fakes.ollama_backend import OllamaBackend
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Hang, NeverEndingStream
from .fakes.threaded import ServerThread
from .gateway import RunningGateway, openai_backend_config

CHAT = "/v1/chat/completions"
QUESTION = {"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]}
BODY = b'{"model":"hint:fast","messages":[{"role":"user","content":"q"}]}'


def open_connections(gw: RunningGateway) -> int:
    return len(gw.gateway.client_server.connections)


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def timed_get(client: httpx.Client, path: str = "/healthz") -> float:
    started = time.perf_counter()
    assert client.get(path).status_code == 200
    return time.perf_counter() - started


def test_slowloris_is_cut_off_while_others_are_served(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="header_timeout_ms = 800\n")
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000
    slow = [socket.create_connection(("127.0.0.1", gw.gateway.client_port)) for _ in range(50)]
    latencies: list[float] = []
    started = time.monotonic()
    try:
        with httpx.Client(base_url=gw.url) as client:
            for index in range(len(head)):
                if time.monotonic() - started > 2.0:
                    break
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(head[index : index + 1])  # one byte at a time
                started_one = time.perf_counter()
                assert client.post(CHAT, json=QUESTION).status_code == 200
                latencies.append(time.perf_counter() - started_one)
                time.sleep(0.05)
        closed = 0
        for sock in slow:
            sock.settimeout(2)
            try:
                closed += sock.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == len(slow)  # each was closed without an answer
    finally:
        for sock in slow:
            sock.close()
    assert statistics.median(latencies) < 0.05
    wait_for(lambda: open_connections(gw) == 0)


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_thousands_of_idle_connections_neither_slow_others_nor_stay_open(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    count = 2000
    raise_fd_limit(2 * count + 512)  # both ends live in this process
    # The idle timeout must outlast opening all of them on a busy CI machine (else the first ones are
    # closed before the last are accepted, and "all open at once" never holds).
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="idle_timeout_ms = 8000\n")
    with httpx.Client(base_url=gw.url) as client:
        for _ in range(20):
            timed_get(client)
        before = statistics.median(timed_get(client) for _ in range(50))
        rss_before = rss_bytes()
        idle = []
        try:
            for _ in range(count):
                idle.append(socket.create_connection(("127.0.0.1", gw.gateway.client_port)))
            wait_for(lambda: open_connections(gw) >= count, timeout=20)
            during = statistics.median(timed_get(client) for _ in range(50))
            assert client.post(CHAT, json=QUESTION).status_code == 200
            grown = rss_bytes() - rss_before
            assert during < max(0.02, 5 * before), (before, during)
            assert grown < 64 * 1024 * 1024, grown  # a few KiB per connection, both ends included
            # The idle ones are closed after the idle timeout; the active client is unaffected.
            wait_for(lambda: open_connections(gw) <= 1, timeout=30)
        finally:
            for sock in idle:
                sock.close()
        assert timed_get(client) < 0.5


def test_disconnect_before_the_body_is_complete_reaches_no_backend(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:20]
            )
    wait_for(lambda: open_connections(gw) == 0)
    assert fake.requests == []
    assert httpx.post(gw.url + CHAT, json=QUESTION).status_code == 200


def test_disconnect_while_waiting_for_the_upstream_cancels_it(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    fake.script(Hang(float("inf")))
    with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
        )
        fake.wait_until(lambda: len(fake.requests) == 1)
    fake.wait_until(lambda: fake.disconnects == 1)
    wait_for(lambda: bool(gw.traffic()) and gw.traffic()[0]["status"] == 499)
    assert httpx.post(gw.url + CHAT, json=QUESTION).status_code == 200


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
def test_disconnect_mid_stream_cancels_the_upstream_in_every_protocol(
    start_gateway: StartGateway, protocol: str
) -> None:
    backend_type, path, body = {
        "openai": (OpenAIBackend, CHAT, {**QUESTION, "stream": True}),
        "anthropic": (AnthropicBackend, "/v1/messages", {**QUESTION, "max_tokens": 50, "stream": True}),
        "ollama": (OllamaBackend, "/api/chat", {**QUESTION, "stream": True}),
    }[protocol]
    with backend_type() as upstream:
        config = openai_backend_config(upstream.url, extra='api_key_env = "MOCK_KEY"')
        gw = start_gateway(config.replace('"openai"', f'"{protocol}"'), env={"MOCK_KEY": "upstream-key"})
        upstream.script(NeverEndingStream(interval=0.05))
        with httpx.stream("POST", gw.url + path, json=body, timeout=10) as resp:
            assert resp.status_code == 200
            received = b""
            for chunk in resp.iter_bytes():
                received += chunk
                if received.count(b"tick") >= 3:
                    break
        upstream.wait_until(lambda: upstream.disconnects == 1)
        wait_for(lambda: gw.traffic() and gw.traffic()[0]["status"] == 499)
        assert gw.gateway.traffic.open_streams == 0


class Firehose:
    """An upstream that streams big SSE events as fast as the gateway takes them, forever, and notes
    when the gateway hangs up."""

    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self.hung_up = asyncio.Event()
        self.disconnected = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            event = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 60_000 + b'"}}]}\n\n'
            chunk = b"%x\r\n%b\r\n" % (len(event), event)
            while True:
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected = True
        finally:
            self._tasks.discard(task)
            writer.close()


def test_a_client_that_stops_reading_a_stream_is_cut_off_and_the_upstream_released(
    start_gateway: StartGateway,
) -> None:
    firehose = Firehose()
    with ServerThread(firehose, name="firehose"):
        gw = start_gateway(
            openai_backend_config(f"http://127.0.0.1:{firehose.port}"),
            gateway_extra="idle_timeout_ms = 500\n",
        )
        with socket.create_connection(("127.0.0.1", gw.gateway.client_port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            body = b'{"model":"hint:fast","stream":true,"messages":[{"role":"user","content":"q"}]}'
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            wait_for(lambda: firehose.disconnected, timeout=10)  # never read a byte
        assert firehose.requests == 1
        wait_for(lambda: open_connections(gw) == 0)
        wait_for(lambda: gw.gateway.traffic.open_streams == 0)
        pools = [backend.pool for backend in gw.gateway.state.backends.values()]  # type: ignore[attr-defined]
        wait_for(lambda: all(pool.connections_open == 0 for pool in pools))
