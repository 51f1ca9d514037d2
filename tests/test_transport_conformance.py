"""Conformance tests for the gateway's own HTTP/1.1 client (``lm_gateway.http.transport``).

Every test talks to a real server on a real socket: the servers below are scripted per test (what to
answer, when to close, how to cut the bytes) so that each rule the client must follow is exercised
exactly, on both the default event loop and uvloop. Nothing of the client is mocked.

The helpers here (``Upstream``, ``Peer``, ``run``...) are also used by ``test_transport_tls_proxy.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from lm_gateway.http.transport import (
    ConnectError,
    PayloadError,
    Pool,
    Response,
    ServerDisconnected,
    TransportError,
)

# -- harness ---------------------------------------------------------------------------------------

Runner = Callable[[Callable[[], Awaitable[Any]]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """``run(scenario)`` runs an async scenario to completion on a fresh loop of the given kind."""

    def runner(scenario: Callable[[], Awaitable[Any]]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(20):
                return await scenario()

        if request.param == "uvloop":
            return uvloop.run(bounded())
        return asyncio.run(bounded())

    return runner


@dataclass
class Req:
    """A request as the server received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    head: bytes
    peer: int


class Peer:
    """One accepted connection, seen from the server."""

    def __init__(
        self, upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.upstream = upstream
        self.reader = reader
        self.writer = writer
        self.index = len(upstream.peers)
        self.closed_by_client = asyncio.Event()

    async def request(self) -> Req | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(size) if size else b""
        req = Req(method, target, headers, body, head, self.index)
        self.upstream.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_client_close(self) -> None:
        """Read (and discard) until the client closes its side."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.closed_by_client.set()

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[Peer], Awaitable[None]]


@dataclass
class Upstream:
    """A scripted HTTP server on 127.0.0.1 (optionally TLS): ``handler(peer)`` runs per connection."""

    handler: Handler
    ssl: Any = None
    peers: list[Peer] = field(default_factory=list)
    requests: list[Req] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()  # handlers still scripted to wait: stop them quietly
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self.peers:
            peer.writer.close()
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self, reader, writer)
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the end of a scripted connection, or of the test
        finally:
            writer.close()
            self._tasks.discard(task)


def ok(body: bytes = b"", *, headers: bytes = b"", status: bytes = b"200 OK") -> bytes:
    """A complete content-length response."""
    return b"HTTP/1.1 %b\r\nContent-Length: %d\r\n%b\r\n%b" % (status, len(body), headers, body)


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body (without the head)."""
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def answering(respond: Callable[[Req], bytes]) -> Handler:
    """A keep-alive server answering each request with ``respond(req)``."""

    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            await peer.send(respond(req))

    return handler


def echo_path(req: Req) -> bytes:
    return ok(req.target.encode())


async def body_of(resp: Response) -> bytes:
    """Read with readany() until the end, as the relay does."""
    parts = []
    while chunk := await resp.readany():
        parts.append(chunk)
    return b"".join(parts)


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nobody listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


H = b"Content-Type: application/json\r\n"


# -- bodies ----------------------------------------------------------------------------------------


def test_content_length_body_and_headers(run: Runner) -> None:
    async def scenario() -> None:
        head = b"Content-Type: application/json\r\nX-Multi: a\r\nx-multi: b\r\n"
        async with Upstream(answering(lambda req: ok(b'{"ok":true}', headers=head))) as up:
            pool = Pool(up.url + "/v1/")
            try:
                headers = pool.prepare_headers({"Authorization": "Bearer k", "X-Trace": "t1"})
                resp = await pool.request("POST", "/chat/completions", headers, b'{"a":1}')
                assert resp.status == 200
                assert resp.content_length == 11
                assert resp.headers.get("content-type") == "application/json"
                assert resp.headers.get("CONTENT-TYPE") == "application/json"
                assert resp.headers.get("x-multi") == "a, b"
                assert resp.headers.get("missing") is None
                assert "Content-Length" in resp.headers
                assert await resp.read() == b'{"ok":true}'
                resp.release()
            finally:
                await pool.close()
            req = up.requests[0]
            assert req.method == "POST"
            assert req.target == "/v1/chat/completions"
            assert req.headers["host"] == f"127.0.0.1:{up.port}"
            assert req.headers["content-length"] == "7"
            assert req.headers["authorization"] == "Bearer k"
            assert req.headers["x-trace"] == "t1"
            assert req.body == b'{"a":1}'

    run(scenario)


def test_request_framing_per_method(run: Runner) -> None:
    """GET without a body sends no Content-Length; a POST without a body says 0."""

    async def scenario() -> None:
        async with Upstream(answering(lambda req: ok(b"x"))) as up:
            pool = Pool(up.url)
            try:
                for method in ("GET", "POST", "DELETE"):
                    await (await pool.request(method, "/p?q=1", b"")).read()
            finally:
                await pool.close()
            get, post, delete = up.requests
            assert get.target == "/p?q=1" and "content-length" not in get.headers
            assert post.headers["content-length"] == "0"
            assert "content-length" not in delete.headers

    run(scenario)


def test_chunked_body_split_across_writes_with_trailers(run: Runner) -> None:
    body = chunked(b"data: one\n\n", b"data: two\n\n", b"x" * 5000, trailers=b"X-Checksum: abc\r\n")

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            wire = CHUNKED_HEAD + body
            # Cut everywhere: inside the head, inside chunk sizes, CRLFs, data and trailers.
            for i in range(0, len(wire), 7):
                await peer.send(wire[i : i + 7])
                if i % 70 == 0:
                    await asyncio.sleep(0)

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(2):
                    resp = await pool.request("GET", "/", b"")
                    assert resp.headers.get("transfer-encoding") == "chunked"
                    assert resp.content_length is None
                    assert await body_of(resp) == b"data: one\n\ndata: two\n\n" + b"x" * 5000
                    assert await resp.readany() == b""
            finally:
                await pool.close()
            assert up.connections == 1  # the trailers ended the message: connection reused

    run(scenario)


def test_body_until_close(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await peer.send(b"part two")
        peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("GET", "/", b"")
                assert resp.content_length is None
                assert await resp.read() == b"part one, part two"
                await until(lambda: pool.connections_open == 0)
                assert pool.idle_count == 0
                resp = await pool.request("GET", "/", b"")  # a new connection, not the closed one
                assert await resp.read() == b"part one, part two"
            finally:
                await pool.close()
            assert up.connections == 2

    run(scenario)


def test_read_limit(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req.target == "/cl":
                await peer.send(ok(b"y" * 1000))
            else:
                await peer.send(CHUNKED_HEAD + chunked(b"y" * 600, b"y" * 600))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for path in ("/cl", "/chunked"):
                    resp = await pool.request("GET", path, b"")
                    with pytest.raises(PayloadError, match="limit"):
                        await resp.read(limit=500)
                resp = await pool.request("GET", "/cl", b"")
                assert len(await resp.read(limit=1000)) == 1000
            finally:
                await pool.close()

    run(scenario)


# -- keep-alive and closes -------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(run: Runner) -> None:
    async def scenario() -> None:
        async with Upstream(answering(echo_path)) as up:
            pool = Pool(up.url, max_connections=4)
            try:
                headers = pool.prepare_headers({"Accept": "*/*"})
                for i in range(25):
                    resp = await pool.request("POST", f"/r{i}", headers, b"{}")
                    assert await resp.read() == f"/r{i}".encode()
                    resp.release()
                assert pool.connections_open == 1
                assert pool.idle_count == 1
            finally:
                await pool.close()
            assert up.connections == 1
            assert len(up.requests) == 25

    run(scenario)


def test_idle_connections_are_reused_lifo_with_nodelay(run: Runner) -> None:
    """The most recently used connection goes out first (the least likely to have hit the
    upstream's idle timeout); the others stay idle and age out."""

    async def scenario() -> None:
        async with Upstream(answering(echo_path)) as up:
            pool = Pool(up.url, max_connections=4)
            try:

                async def call(path: str) -> bytes:
                    return await (await pool.request("GET", path, b"")).read()

                await asyncio.gather(*(call(f"/burst{i}") for i in range(3)))
                assert pool.idle_count == 3
                for conn in pool._idle:
                    assert conn._transport is not None
                    sock = conn._transport.get_extra_info("socket")
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for i in range(5):
                    await call(f"/seq{i}")
            finally:
                await pool.close()
            sequential = {r.peer for r in up.requests if r.target.startswith("/seq")}
            assert len(sequential) == 1

    run(scenario)


def test_idle_connection_closed_by_server_is_not_reused(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"first"))
        await asyncio.sleep(0.05)  # the upstream's idle timeout
        peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                assert await (await pool.request("GET", "/", b"")).read() == b"first"
                await until(lambda: pool.idle_count == 0)  # noticed without any request
                assert pool.connections_open == 0
                assert await (await pool.request("GET", "/", b"")).read() == b"first"
            finally:
                await pool.close()
            assert up.connections == 2

    run(scenario)


def test_stale_keep_alive_race_is_retried_once(run: Runner) -> None:
    """The upstream closes a pooled connection just as the next request arrives on it: the client
    must not see it; the request is sent again on a fresh connection."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"answer"))
        await peer.request()  # the second request on this connection: close without answering
        peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(3):
                    resp = await pool.request("POST", "/", b"", b"payload")
                    assert await resp.read() == b"answer"
            finally:
                await pool.close()
            # Request 1 on A; 2 on A (closed) then B; 3 on B (closed) then C.
            assert up.connections == 3
            assert [r.peer for r in up.requests] == [0, 0, 1, 1, 2]
            assert all(r.body == b"payload" for r in up.requests)

    run(scenario)


def test_reset_instead_of_close_is_also_retried(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"answer"))
        await peer.request()
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.writer.transport.abort()  # RST

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(3):
                    assert await (await pool.request("GET", "/", b"")).read() == b"answer"
            finally:
                await pool.close()
            assert up.connections == 3

    run(scenario)


def test_no_retry_once_answer_bytes_arrived(run: Runner) -> None:
    """A reused connection that dies after part of the answer arrived is not retried: the upstream
    has processed the request."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"answer"))
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Len")
        peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                await (await pool.request("GET", "/", b"")).read()
                with pytest.raises(ServerDisconnected) as info:
                    await pool.request("POST", "/", b"", b"x")
                assert info.value.got_bytes is True
                assert f"127.0.0.1:{up.port}" in info.value.message
                assert pool.connections_open == 0
            finally:
                await pool.close()
            assert up.connections == 1

    run(scenario)


def test_close_after_streamed_response_while_advertising_keep_alive(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunked(b"data: a\n\n", b"data: [DONE]\n\n"))
        peer.close()  # no Connection: close was announced

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(4):
                    resp = await pool.request("POST", "/", b"", b"{}")
                    assert await body_of(resp) == b"data: a\n\ndata: [DONE]\n\n"
                    resp.release()  # and the next request goes out at once
            finally:
                await pool.close()
            assert up.connections == 4

    run(scenario)


def test_connection_close_header_means_new_connection(run: Runner) -> None:
    async def scenario() -> None:
        async with Upstream(answering(lambda req: ok(b"bye", headers=b"Connection: close\r\n"))) as up:
            pool = Pool(up.url)
            try:
                for _ in range(3):
                    assert await (await pool.request("GET", "/", b"")).read() == b"bye"
                    assert pool.idle_count == 0
                await until(lambda: pool.connections_open == 0)
                await until(lambda: all(p.closed_by_client.is_set() for p in up.peers))  # client closed
            finally:
                await pool.close()
            assert up.connections == 3

    run(scenario)


def test_http10_keep_alive_rules(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req.target == "/ka":
                await peer.send(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nka")
            else:
                await peer.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nno")

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for path, body in (("/ka", b"ka"), ("/ka", b"ka"), ("/plain", b"no"), ("/ka", b"ka")):
                    assert await (await pool.request("GET", path, b"")).read() == body
            finally:
                await pool.close()
            # /ka, /ka reuse one connection; /plain ends it; the last /ka needs a new one.
            assert up.connections == 2

    run(scenario)


def test_fresh_connection_closed_without_answer_is_not_retried(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                with pytest.raises(ServerDisconnected) as info:
                    await pool.request("POST", "/", b"", b"{}")
                assert info.value.got_bytes is False
                assert pool.connections_open == 0
            finally:
                await pool.close()
            assert up.connections == 1

    run(scenario)


def test_unsolicited_bytes_make_a_connection_unusable(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(ok(b"x") + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(3):
                    assert await (await pool.request("GET", "/", b"")).read() == b"x"
                    await asyncio.sleep(0.01)
            finally:
                await pool.close()
            assert up.connections == 3

    run(scenario)


def test_idle_timeout_closes_and_skips_old_connections(run: Runner) -> None:
    async def scenario() -> None:
        async with Upstream(answering(echo_path)) as up:
            pool = Pool(up.url, idle_timeout=0.1)
            try:
                await (await pool.request("GET", "/a", b"")).read()
                assert pool.idle_count == 1
                await until(lambda: pool.idle_count == 0)  # the pool's sweep, no request needed
                assert pool.connections_open == 0
                await until(lambda: up.peers[0].closed_by_client.is_set())
                assert await (await pool.request("GET", "/b", b"")).read() == b"/b"
            finally:
                await pool.close()
            assert up.connections == 2

    run(scenario)


# -- interim and body-less answers -----------------------------------------------------------------


def test_interim_1xx_answers_are_skipped(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
            await peer.send(ok(b"final", headers=b"X-Final: yes\r\n"))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for _ in range(2):
                    resp = await pool.request("POST", "/", b"", b"{}")
                    assert resp.status == 200
                    assert resp.headers.get("x-final") == "yes"
                    assert resp.headers.get("link") is None
                    assert await resp.read() == b"final"
            finally:
                await pool.close()
            assert up.connections == 1

    run(scenario)


def test_head_204_304_have_no_body(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req.method == "HEAD" and req.target == "/no-length":
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            elif req.method == "HEAD":
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif req.target == "/head-chunked":
                await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            elif req.target == "/204":
                await peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif req.target == "/304":
                await peer.send(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")
            else:
                await peer.send(ok(b"body"))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("HEAD", "/", b"")
                assert resp.status == 200 and resp.content_length == 1000
                assert await resp.read() == b""
                assert await resp.readany() == b""
                assert (await pool.request("GET", "/", b"")).status == 200  # framing intact after HEAD
                resp = await pool.request("HEAD", "/no-length", b"")  # not "until close" for HEAD
                assert await resp.read() == b""
                for path, status in (("/204", 204), ("/304", 304)):
                    resp = await pool.request("GET", path, b"")
                    assert resp.status == status
                    assert await resp.read() == b""
                assert await (await pool.request("GET", "/", b"")).read() == b"body"
            finally:
                await pool.close()
            assert up.connections == 1

    run(scenario)


# -- streaming and back-pressure -------------------------------------------------------------------


def test_stream_is_relayed_incrementally(run: Runner) -> None:
    """Each event is readable before the upstream sends the next one (no buffering to the end)."""
    events = [b"data: %d\n\n" % i for i in range(5)]

    async def scenario() -> None:
        read_one = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(CHUNKED_HEAD)
            for event in events:
                read_one.clear()
                await peer.send(b"%x\r\n%b\r\n" % (len(event), event))
                await read_one.wait()  # the next event only after the client has read this one
            await peer.send(b"0\r\n\r\n")

        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("POST", "/", b"", b"{}")
                for event in events:
                    assert await resp.readany() == event
                    read_one.set()
                assert await resp.readany() == b""
            finally:
                await pool.close()

    run(scenario)


def test_readany_joins_what_has_arrived(run: Runner) -> None:
    async def scenario() -> None:
        sent = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(CHUNKED_HEAD)
            for i in range(10):
                await peer.send(b"2\r\n%02d\r\n" % i)
            sent.set()
            await asyncio.sleep(0.05)
            await peer.send(b"0\r\n\r\n")

        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("GET", "/", b"")
                await sent.wait()
                await asyncio.sleep(0.02)
                assert await resp.readany() == b"".join(b"%02d" % i for i in range(10))
                assert await resp.readany() == b""
            finally:
                await pool.close()

    run(scenario)


def test_back_pressure_bounds_memory_and_keeps_every_byte(run: Runner) -> None:
    payload = hashlib.sha256(b"seed").digest() * (16 * 1024 * 1024 // 32)  # 16 MiB
    high_water = 64 * 1024

    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req.target == "/chunked":
                await peer.send(CHUNKED_HEAD)
                for i in range(0, len(payload), 1 << 20):
                    await peer.send(chunked(payload[i : i + (1 << 20)])[:-5])
                await peer.send(b"0\r\n\r\n")
            else:
                await peer.send(ok(payload))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, read_high_water=high_water)
            try:
                for path in ("/cl", "/chunked"):
                    resp = await pool.request("GET", path, b"")
                    digest = hashlib.sha256()
                    peak = 0
                    total = 0
                    while chunk := await resp.readany():
                        digest.update(chunk)
                        total += len(chunk)
                        if total < 2 * 1024 * 1024:
                            await asyncio.sleep(0.01)  # a slow reader at first
                            peak = max(peak, resp.buffered)
                    assert total == len(payload)
                    assert digest.digest() == hashlib.sha256(payload).digest()
                    # Paused above the high-water mark: at most one socket read more than it.
                    assert peak <= high_water + 512 * 1024, peak
                    assert resp.complete
                assert up.connections == 1  # back-pressure did not cost the connection
            finally:
                await pool.close()

    run(scenario)


# -- cancellation, release, limits -----------------------------------------------------------------


def test_cancel_while_waiting_for_head_closes_connection_and_frees_slot(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        req = await peer.request()
        if req is not None and req.target == "/hang":
            await peer.wait_client_close()
            return
        await peer.send(ok(b"fine"))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=1)
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await pool.request("GET", "/hang", b"")
                assert pool.connections_open == 0
                await until(lambda: up.peers[0].closed_by_client.is_set())
                assert await (await pool.request("GET", "/", b"")).read() == b"fine"
            finally:
                await pool.close()

    run(scenario)


def test_release_or_close_mid_body_closes_connection(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        req = await peer.request()
        if req is None:
            return
        await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
        await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=1)
            try:
                resp = await pool.request("GET", "/", b"")
                assert await resp.readany() == b"hello"
                resp.release()
                assert pool.connections_open == 0
                with pytest.raises(TransportError):
                    await resp.readany()
                resp = await pool.request("GET", "/", b"")
                resp.close()
                assert pool.connections_open == 0
                await until(lambda: all(p.closed_by_client.is_set() for p in up.peers))
            finally:
                await pool.close()

    run(scenario)


def test_dropped_response_frees_its_slot(run: Runner) -> None:
    """A reader that forgets a response mid-body (a bug, but a possible one) must not keep its
    connection slot forever."""

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
            await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=1)
            try:
                resp: Response | None = await pool.request("GET", "/", b"")
                assert pool.connections_open == 1
                del resp
                await asyncio.sleep(0)  # the loop's wake-up handle held the head future (and its result)
                gc.collect()
                assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


def test_max_connections_queue_is_fifo_and_cancellation_safe(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            await asyncio.sleep(0.01)
            await peer.send(ok(req.target.encode()))

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=1)
            try:

                async def call(i: int) -> bytes:
                    return await (await pool.request("GET", f"/{i}", b"")).read()

                tasks = [asyncio.create_task(call(i)) for i in range(6)]
                await asyncio.sleep(0)
                tasks[2].cancel()  # a waiter gives up: the others must not lose their turn
                done = await asyncio.gather(*tasks, return_exceptions=True)
                assert isinstance(done[2], asyncio.CancelledError)
                assert [d for i, d in enumerate(done) if i != 2] == [b"/0", b"/1", b"/3", b"/4", b"/5"]
                assert [r.target for r in up.requests] == ["/0", "/1", "/3", "/4", "/5"]
                assert pool.connections_open == 1
            finally:
                await pool.close()
            assert up.connections == 1

    run(scenario)


def test_max_connections_bounds_concurrency(run: Runner) -> None:
    async def scenario() -> None:
        active = 0
        peak = 0

        async def handler(peer: Peer) -> None:
            nonlocal active, peak
            while (req := await peer.request()) is not None:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.01)
                active -= 1
                await peer.send(ok(req.target.encode()))

        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=3)
            try:

                async def call(i: int) -> bytes:
                    return await (await pool.request("GET", f"/{i}", b"")).read()

                results = await asyncio.gather(*(call(i) for i in range(30)))
                assert results == [f"/{i}".encode() for i in range(30)]
                assert pool.connections_open == 3
                assert pool.idle_count == 3
            finally:
                await pool.close()
            assert peak == 3
            assert up.connections == 3

    run(scenario)


def test_pool_close_fails_waiters_and_closes_connections(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url, max_connections=1)
            first = asyncio.create_task(pool.request("GET", "/", b""))
            second = asyncio.create_task(pool.request("GET", "/", b""))
            await until(lambda: len(up.requests) == 1)
            await pool.close()
            for task in (first, second):
                with pytest.raises(TransportError, match="closed"):
                    await task
            assert pool.connections_open == 0
            await until(lambda: up.peers[0].closed_by_client.is_set())
            with pytest.raises(TransportError, match="closed"):
                await pool.request("GET", "/", b"")

    run(scenario)


# -- failures --------------------------------------------------------------------------------------


def test_connect_refused(run: Runner, closed_port: int) -> None:
    async def scenario() -> None:
        pool = Pool(f"http://127.0.0.1:{closed_port}")
        try:
            with pytest.raises(ConnectError, match=f"127.0.0.1:{closed_port}"):
                await pool.request("GET", "/", b"")
            assert pool.connections_open == 0
        finally:
            await pool.close()

    run(scenario)


def test_connect_timeout(run: Runner) -> None:
    """A listener whose accept queue is full drops SYNs: connecting hangs until connect_timeout."""

    async def scenario() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        pool = Pool(f"http://127.0.0.1:{port}", connect_timeout=0.2)
        try:
            with pytest.raises(ConnectError, match="timed out"):
                try:
                    async with asyncio.timeout(3):
                        await pool.request("GET", "/", b"")
                except TimeoutError:
                    pytest.skip("this kernel completed the connection: can't simulate a connect timeout")
            assert pool.connections_open == 0
        finally:
            await pool.close()
            for sock in [*fillers, listener]:
                sock.close()

    run(scenario)


def test_malformed_response_is_a_payload_error(run: Runner) -> None:
    answers = {
        "/status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "/garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "/header": b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "/length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        # An HTTP/2-only upstream answering an HTTP/1.1 request with a SETTINGS + GOAWAY frame.
        "/h2-only": b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x08\x07\x00\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x00\x00\x00\x01",
    }

    async def handler(peer: Peer) -> None:
        req = await peer.request()
        if req is not None:
            await peer.send(answers[req.target])
            await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                for path in answers:
                    with pytest.raises(PayloadError, match="invalid HTTP"):
                        await pool.request("GET", path, b"")
                    assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


def test_malformed_chunk_mid_body_is_a_payload_error(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
            await asyncio.sleep(0.02)
            await peer.send(b"zz\r\nbad\r\n")
            await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("GET", "/", b"")
                assert await resp.readany() == b"hello"
                with pytest.raises(PayloadError):
                    await resp.readany()
                assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_cut_body_is_reported(run: Runner, framing: str) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            if framing == "chunked":
                await peer.send(CHUNKED_HEAD + b"5\r\nhello\r\n6\r\nwor")
            else:
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhellowor")
            peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                resp = await pool.request("GET", "/", b"")
                received = b""
                with pytest.raises((ServerDisconnected, PayloadError)) as info:
                    while chunk := await resp.readany():
                        received += chunk
                assert received == b"hellowor"  # what did arrive was relayed first
                if isinstance(info.value, ServerDisconnected):
                    assert info.value.got_bytes is True
                await until(lambda: pool.connections_open == 0)
                resp = await pool.request("GET", "/", b"")  # and read() says so too
                with pytest.raises((ServerDisconnected, PayloadError)):
                    await resp.read()
            finally:
                await pool.close()

    run(scenario)


def test_closed_in_the_middle_of_the_head(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
            peer.close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                with pytest.raises(ServerDisconnected) as info:
                    await pool.request("GET", "/", b"")
                assert info.value.got_bytes is True
                assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


def test_upgrade_answer_is_refused(run: Runner) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
            )
            await peer.wait_client_close()

    async def scenario() -> None:
        async with Upstream(handler) as up:
            pool = Pool(up.url)
            try:
                with pytest.raises(PayloadError, match="switch protocols"):
                    await pool.request("GET", "/", b"")
                assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


# -- input validation (no sockets needed) ----------------------------------------------------------


def test_prepare_headers_rejects_injection_without_echoing_values() -> None:
    pool = Pool("http://127.0.0.1:9")
    with pytest.raises(ValueError) as info:
        pool.prepare_headers({"Authorization": "Bearer sk-secret\r\nX-Evil: 1"})
    assert "sk-secret" not in str(info.value)
    with pytest.raises(ValueError):
        pool.prepare_headers({"Bad Name": "x"})
    with pytest.raises(ValueError) as info:
        pool.prepare_headers({"X-Key": "sk-\u20ac-secret"})
    assert "secret" not in str(info.value)
    built = pool.prepare_headers({"Host": "evil", "Content-Length": "5", "Transfer-Encoding": "x", "A": "b"})
    assert built == b"A: b\r\n"


def test_request_target_validation() -> None:
    async def scenario() -> None:
        pool = Pool("http://127.0.0.1:9")
        for path in ("no-slash", "/a b", "/a\r\nX: y", "/caf\u00e9"):
            with pytest.raises(ValueError):
                await pool.request("GET", path, b"")
        with pytest.raises(ValueError):
            await pool.request("GE T", "/", b"")
        assert pool.connections_open == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "url",
    ["ftp://h/", "http://user:pw@h/", "http:///nohost", "http://h:99999/", "http://h/?q=1", "http://h/a b"],
)
def test_unsupported_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as info:
        Pool(url)
    assert "pw" not in str(info.value)


def test_host_header_forms() -> None:
    assert Pool("http://example.com")._host_line == b"Host: example.com\r\n"
    assert Pool("https://example.com:443/v1")._host_line == b"Host: example.com\r\n"
    assert Pool("http://example.com:8080")._host_line == b"Host: example.com:8080\r\n"
    assert Pool("http://[::1]:8080")._host_line == b"Host: [::1]:8080\r\n"
