"""A streamed response goes out in as few writes as its producer allows: a head, chunks and end that
are ready together are one write (one system call, one wake-up of the client), but a chunk is never
held back waiting for the next one, a failing producer's bytes still go out before the close, and
the next response on a keep-alive connection comes after the stream's end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from lm_gateway.http.server import HttpProtocol, HttpServer, Request, Response, ServerLimits, StreamResponse

REQUEST = b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces)


class _RecordingTransport:
    """Just enough of a transport to see each write the protocol makes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _ready_chunks() -> AsyncIterator[bytes]:
    for piece in (b"one", b"two", b"three"):
        yield piece


async def test_a_head_chunks_and_end_ready_together_are_one_write() -> None:
    async def handler(request: Request) -> StreamResponse:
        return StreamResponse(200, _ready_chunks(), [("content-type", "text/plain")])

    server = HttpServer(handler, ServerLimits(), asyncio.get_running_loop())
    protocol = HttpProtocol(server)
    transport = _RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(REQUEST)
    for _ in range(20):  # the handler's task, then the write at the end of the stream
        await asyncio.sleep(0)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    assert body == _chunked(b"one", b"two", b"three") + b"0\r\n\r\n"
    protocol.connection_lost(None)


async def _serve(handler: object) -> tuple[HttpServer, int]:
    server = HttpServer(handler, ServerLimits(), asyncio.get_running_loop())  # type: ignore[arg-type]
    return server, await server.listen("127.0.0.1", 0)


async def _read_until(reader: asyncio.StreamReader, marker: bytes, seen: bytes = b"") -> bytes:
    while marker not in seen:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"connection closed before {marker!r}; got {seen!r}"
        seen += data
    return seen


async def test_a_chunk_goes_out_before_the_next_one_is_made_and_the_next_response_after_the_end() -> None:
    release = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()  # made only once the client has the first chunk
        yield b"second"

    async def handler(request: Request) -> Response | StreamResponse:
        if request.path == "/stream":
            return StreamResponse(200, chunks())
        return Response(200, b"after", [("content-type", "text/plain")])

    server, port = await _serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined: waiting
        seen = await _read_until(reader, _chunked(b"first"))
        assert b"second" not in seen
        release.set()
        seen = await _read_until(reader, b"after", seen)
        body = seen.partition(b"\r\n\r\n")[2]
        end = _chunked(b"first", b"second") + b"0\r\n\r\n"
        assert body.startswith(end)
        assert body[len(end) :].startswith(b"HTTP/1.1 200") and body.endswith(b"\r\n\r\nafter")
    finally:
        writer.close()
        await server.drain(0.5)


async def test_what_a_failing_producer_made_goes_out_before_the_connection_closes() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("producer broke")

    async def handler(request: Request) -> StreamResponse:
        return StreamResponse(200, chunks())

    server, port = await _serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        received = await asyncio.wait_for(reader.read(), 5)  # to the close
        assert received.startswith(b"HTTP/1.1 200")
        body = received.partition(b"\r\n\r\n")[2]
        assert body == _chunked(b"partial")  # and no end: visibly incomplete
    finally:
        writer.close()
        await server.drain(0.5)
