"""A small HTTP/1.1 server: an asyncio Protocol on httptools' parser.

Why not a framework: the gateway's per-request work is tiny, so the server's own cost shows directly
in added latency (see ``bench/``). This module does only what the gateway needs and does it fully:
keep-alive and pipelined requests (answered in order), ``Expect: 100-continue``, bounded bodies and
headers, slow-client and idle timeouts, back-pressure for streamed responses, cancellation of the
handler when the client goes away, and a graceful drain on shutdown.

Handlers receive a :class:`Request` and return a :class:`Response` or a :class:`StreamResponse`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

import httptools
import orjson

log = logging.getLogger("lm_gateway.http")

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("latin-1")
        _STATUS_LINES[status] = line
    return line


class Request:
    """One parsed request. Header names are lower-cased; a repeated header keeps its first value and
    is listed in ``duplicate_headers`` so that handlers can refuse ambiguous credentials."""

    __slots__ = (
        "body",
        "duplicate_headers",
        "headers",
        "keep_alive",
        "method",
        "path",
        "peer",
        "query",
        "received_at",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        peer: str,
        keep_alive: bool,
        received_at: float,
        duplicate_headers: frozenset[str],
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.peer = peer
        self.keep_alive = keep_alive
        self.received_at = received_at
        self.duplicate_headers = duplicate_headers


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []


class StreamResponse:
    """A response whose body is produced while it is sent (SSE, NDJSON).

    ``chunks`` is iterated after the head is queued. Items that are ready together go out in one
    write with the head; an item that comes after a wait goes out as soon as the iterator waits again
    (``HttpProtocol._write_soon``). If the client disconnects, the task iterating it is cancelled,
    which closes the iterator (and with it the upstream request). ``on_close(completed)`` runs once
    the response is over, however it ended; ``completed`` is false when the client went away or the
    connection broke first.
    """

    __slots__ = ("chunks", "headers", "on_close", "status")

    def __init__(
        self,
        status: int,
        chunks: AsyncIterator[bytes],
        headers: list[tuple[str, str]] | None = None,
        on_close: Callable[[bool], None] | None = None,
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers if headers is not None else []
        self.on_close = on_close


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    hdrs = [("content-type", "application/json")]
    if headers:
        hdrs.extend(headers)
    return Response(status, orjson.dumps(payload), hdrs)


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """The OpenAI error shape, used for every error the server itself produces."""
    payload = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return json_response(status, payload, headers)


class ServerLimits:
    """Bounds that keep one client from holding resources it should not.

    ``header_timeout`` is the time a client has to send a whole request (head and body) once its
    first byte arrived (slowloris); ``idle_timeout`` closes keep-alive connections with nothing to do,
    and also clients that stop reading a response. Connections read their server's one instance, so
    :meth:`update` (a config reload) applies to open connections too.
    """

    __slots__ = ("header_timeout", "idle_timeout", "max_body_bytes", "max_header_bytes", "max_pipelined")

    def __init__(
        self,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_header_bytes: int = 64 * 1024,
        header_timeout: float = 30.0,
        idle_timeout: float = 75.0,
        max_pipelined: int = 16,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_pipelined = max_pipelined

    def update(self, other: ServerLimits) -> None:
        """Take ``other``'s values in place (timers already armed keep their old deadline)."""
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))


class _Rejected(Exception):
    """Raised from parser callbacks to stop parsing with an HTTP error."""

    def __init__(self, response: Response) -> None:
        self.response = response


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer = "-"
        # Request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._dups: set[str] | None = None
        self._header_bytes = 0
        self._last_header_name = ""
        self._body: list[bytes] = []
        self._body_size = 0
        self._message_started_at = 0.0
        # Requests waiting for the handler, answered in order
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._reading_paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._out: list[bytes] | None = None  # stream bytes waiting for _flush
        self._timer: asyncio.TimerHandle | None = None

    # -- connection lifecycle -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same interface.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = str(peer[0])
        self._server.connections.add(self)
        self._arm_timer(self._limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._closing = True
        self._cancel_timer()
        self._can_write.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._pending.clear()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(
                error_response(400, "protocol upgrades are not supported", code="upgrade_not_supported")
            )
        except httptools.HttpParserError as exc:
            # httptools wraps exceptions raised in callbacks; ours carry the response to send.
            cause = exc.__context__ if not isinstance(exc, _Rejected) else exc
            if isinstance(cause, _Rejected):
                self._reject(cause.response)
            else:
                self._reject(error_response(400, "malformed HTTP request", code="malformed_request"))

    # -- parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._dups = None
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._message_started_at = self._loop.time()
        self._arm_timer(self._limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self._headers:
            if key == "cookie":
                self._headers[key] += "; " + text
                return
            if key == "x-forwarded-for":  # a list header: repeated lines are one list, in order
                self._headers[key] += ", " + text
                return
            if self._dups is None:
                self._dups = set()
            self._dups.add(key)
            return
        self._headers[key] = text

    def on_headers_complete(self) -> None:
        declared = self._headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limits.max_body_bytes:
            raise _Rejected(self._too_large())
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            raise _Rejected(self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        path = parsed.path.decode("latin-1")
        query = parsed.query.decode("latin-1") if parsed.query else ""
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        request = Request(
            self._parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body,
            self._peer,
            self._parser.should_keep_alive(),
            self._message_started_at,
            frozenset(self._dups) if self._dups else frozenset(),
        )
        self._body = []
        self._cancel_timer()
        self._pending.append(request)
        if len(self._pending) >= self._limits.max_pipelined and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    # -- request processing -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._pending and not self._closing:
                request = self._pending.popleft()
                if self._reading_paused and self._transport is not None:
                    self._transport.resume_reading()
                    self._reading_paused = False
                self._server.in_flight += 1
                try:
                    keep_alive = await self._serve_one(request)
                finally:
                    self._server.in_flight -= 1
                if not keep_alive or self._server.draining:
                    self._close()
                    return
        except asyncio.CancelledError:
            return
        finally:
            self._task = None
        if not self._closing:
            self._arm_timer(self._limits.idle_timeout)

    async def _serve_one(self, request: Request) -> bool:
        try:
            response = await self._server.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error while serving %s %s", request.method, request.path)
            response = error_response(500, "internal gateway error", type_="server_error", code="internal")
        keep_alive = request.keep_alive and not self._server.draining
        if isinstance(response, StreamResponse):
            return await self._send_stream(response, keep_alive)
        self._send(response, keep_alive, request.method == "HEAD")
        return keep_alive

    def _head(self, status: int, headers: list[tuple[str, str]], keep_alive: bool, extra: bytes) -> bytes:
        parts = [_status_line(status)]
        for name, value in headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        parts.append(extra)
        parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        return b"".join(parts)

    def _send(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self._transport is None or self._closing:
            return
        length = b"content-length: %d\r\n" % len(response.body)
        head = self._head(response.status, response.headers, keep_alive, length)
        self._transport.write(head if head_only else head + response.body)

    async def _send_stream(self, response: StreamResponse, keep_alive: bool) -> bool:
        transport = self._transport
        completed = False
        try:
            if transport is None or self._closing:
                return False
            self._write_soon(
                self._head(response.status, response.headers, keep_alive, b"transfer-encoding: chunked\r\n")
            )
            async for chunk in response.chunks:
                if not chunk:
                    continue
                if self._closing:
                    return False
                self._write_soon(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if not self._can_write.is_set() and not await self._writable():
                    return False
            if self._closing:
                return False
            self._write_soon(b"0\r\n\r\n")
            self._flush()  # now: the next response on this connection is written after this one
            completed = True
            return keep_alive
        except Exception:
            # The body producer failed after the head went out: all we can do is end the connection
            # (the chunked body is then visibly incomplete to the client).
            log.exception("stream producer failed")
            self._close()
            return False
        finally:
            closer = getattr(response.chunks, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.debug("stream close failed", exc_info=True)
            if response.on_close is not None:
                response.on_close(completed)

    # -- helpers ----------------------------------------------------------------------------------

    def _write_soon(self, data: bytes) -> None:
        """Write ``data`` in the event loop's next round of callbacks, with whatever the stream adds
        before then. A stream's head, chunks and end that are ready together (an upstream answer that
        came in one read) then go out in one write, one system call and one wake-up of the client,
        instead of three; a chunk that comes after a wait still goes out as soon as the stream waits."""
        out = self._out
        if out is None:
            self._out = [data]
            self._loop.call_soon(self._flush)
        else:
            out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self._transport is not None and not self._closing:
            self._transport.write(b"".join(out))

    async def _writable(self) -> bool:
        """Wait for the client to read what is buffered; a client that stops reading for the idle
        timeout is cut off, so it cannot hold a stream (and its upstream request) open forever."""
        try:
            await asyncio.wait_for(self._can_write.wait(), self._limits.idle_timeout)
        except TimeoutError:
            log.debug("client stopped reading a streamed response; closing the connection")
            self._closing = True
            self.abort()
            return False
        return not self._closing

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._limits.max_header_bytes:
            raise _Rejected(error_response(431, "request headers too large", code="headers_too_large"))

    def _too_large(self) -> Response:
        limit = self._limits.max_body_bytes
        return error_response(413, f"request body larger than {limit} bytes", code="body_too_large")

    def _reject(self, response: Response) -> None:
        """Answer a request that could not be parsed and close: the stream position is unknown."""
        if self._task is None:
            self._send(response, keep_alive=False)
            self._close()
        else:
            # A handler is still answering earlier pipelined requests; do not interleave.
            self._close()

    def _arm_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(seconds, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._task is None:
            # Idle keep-alive connection, or a client too slow to send its request. A client that
            # has not even read its last response would keep a graceful close waiting: abort it.
            transport = self._transport
            if transport is not None and transport.get_write_buffer_size():
                self._closing = True
                transport.abort()
            else:
                self._close()

    def close_if_idle(self) -> bool:
        if self._task is None and not self._pending:
            self._close()
            return True
        return False

    def _close(self) -> None:
        if not self._closing and self._transport is not None:
            self._flush()  # what a stream produced before it failed still goes out, then the close
            self._closing = True
            self._cancel_timer()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """One listening socket and its connections."""

    def __init__(self, handler: Handler, limits: ServerLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.limits = limits
        self.loop = loop
        self.connections: set[HttpProtocol] = set()
        self.in_flight = 0
        self.draining = False
        self._server: asyncio.AbstractServer | None = None

    async def listen(
        self, host: str, port: int, backlog: int = 1024, sock: socket.socket | None = None
    ) -> int:
        """Bind ``host:port`` and listen (port 0: any free port); returns the bound port. ``sock``: an
        already bound socket to serve instead (a ``--workers`` worker's, bound with SO_REUSEPORT)."""
        if sock is not None:
            self._server = await self.loop.create_server(
                lambda: HttpProtocol(self), sock=sock, backlog=backlog
            )
            return int(sock.getsockname()[1])
        self._server = await self.loop.create_server(
            lambda: HttpProtocol(self), host=host, port=port, backlog=backlog, reuse_address=True
        )
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, let in-flight requests and streams finish (up to ``grace_s``), then close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = self.loop.time() + grace_s
        while self.in_flight and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
            for conn in list(self.connections):
                conn.close_if_idle()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
