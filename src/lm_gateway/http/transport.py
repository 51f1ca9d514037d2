"""The gateway's own upstream HTTP/1.1 client: a keep-alive connection pool on asyncio + httptools.

Why our own: the upstream client is the main per-request cost of a Python proxy (measured:
``python -m bench.transport_client`` gives ~3x aiohttp's requests/s at a fifth of its CPU per
request); a minimal pool of asyncio Protocols feeding httptools'
response parser costs a fraction of a general-purpose client. What makes it cheap:

- no task and no timer per request (callers bound a request from outside, by cancellation);
- static headers are encoded once (:meth:`Pool.prepare_headers`) and the request line is cached, so
  a request is one ``transport.write`` of pre-built bytes;
- the connection goes back to the pool the moment the parser sees the end of the response, from
  inside ``data_received``, not when the caller gets round to releasing it;
- body bytes are handed over as they arrive, and a reader gets everything buffered so far in one
  piece (streams are relayed chunk by chunk without a wake-up per event).

What it gets right, because the gateway relies on it for every upstream call: TLS with certificate
and host name verification, chunked / content-length / until-close bodies, keep-alive reuse with one
safe retry when a pooled connection turns out to be closed by the upstream before any byte of the
answer arrived, ``Connection: close`` and HTTP/1.0, interim 1xx answers, HEAD/204/304, back-pressure
when the reader is slow, a FIFO queue for ``max_connections``, cancellation that never leaks a
connection slot, and ``http://`` proxies (absolute-form requests, or a ``CONNECT`` tunnel for
``https://`` upstreams).

What it does not do: configurations it can't serve (HTTPS or SOCKS proxies, credentials in the base
URL, other schemes) are refused with :class:`ValueError` at construction (the backend then reports
itself unreachable with that reason); an upstream that only speaks HTTP/2 shows up as a
:class:`PayloadError` (its frames are not HTTP/1.1) or, over TLS, a :class:`ConnectError` if it
refuses the handshake. No pipelining, no compression handling (bytes are relayed as they come), no
redirects, no cookies.

Error messages may name ``host:port`` and statuses, never credentials or header values.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import re
import socket
import ssl
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Final, cast
from urllib.parse import unquote, urlsplit

import httptools

__all__ = [
    "ConnectError",
    "Headers",
    "PayloadError",
    "Pool",
    "Response",
    "ServerDisconnected",
    "TransportError",
]


# -- errors --------------------------------------------------------------------------------------


class TransportError(Exception):
    """Base of every error this client raises about the upstream exchange."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectError(TransportError):
    """No connection could be made (refused, DNS, timeout, TLS handshake or verification, proxy
    refusal). Nothing was sent to the upstream, so the request may be retried elsewhere."""


class ServerDisconnected(TransportError):
    """The upstream closed the connection before or while answering.

    ``got_bytes`` says whether any byte of the answer had arrived: without any, the upstream may or
    may not have processed the request; with some, the answer is known to be cut short.
    """

    def __init__(self, message: str, *, got_bytes: bool) -> None:
        super().__init__(message)
        self.got_bytes = got_bytes


class PayloadError(TransportError):
    """The upstream's answer is not valid HTTP/1.1, or its body is malformed or larger than allowed."""


# -- constants -------------------------------------------------------------------------------------

_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_OWNED_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding"})
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_RE: Final = re.compile(r"[\r\n\x00]")
_BAD_TARGET_RE: Final = re.compile(r"[\x00-\x20\x7f]")
_MAX_TUNNEL_HEAD: Final = 64 * 1024
_START_LINE_CACHE: Final = 512

# Connection states. The slot of a connection in _NEW or _HEAD belongs to the request using it (which
# may hand it to a retry); in the other states the connection gives its slot back itself when it dies.
_NEW: Final = 0  # being connected, or just handed to a request
_HEAD: Final = 1  # request sent, waiting for the response head
_BODY: Final = 2  # head delivered, body still arriving
_IDLE: Final = 3  # in the pool's idle stack
_HANDOFF: Final = 4  # given to a queued waiter that has not resumed yet
_CLOSED: Final = 5


# -- headers and responses -------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Response headers, case-insensitive. Built lazily: most answers are relayed without anyone
    looking at their headers, so the raw ``(name, value)`` pairs are kept until the first lookup.
    Keys are lower-cased; a repeated header's values are joined with ``", "``."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The headers exactly as received (names not lower-cased), in order."""
        return self._raw

    def _mapping(self) -> dict[str, str]:
        mapping = self._map
        if mapping is None:
            mapping = {}
            for raw_name, raw_value in self._raw:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1").strip()
                seen = mapping.get(name)
                mapping[name] = value if seen is None else f"{seen}, {value}"
            self._map = mapping
        return mapping

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._mapping().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._mapping()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._mapping()

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __repr__(self) -> str:
        return f"<Headers {sorted(self._mapping())}>"  # names only: values may be secrets


class Response:
    """An upstream answer whose head has arrived; the body is read with :meth:`readany`/:meth:`read`.

    The body is buffered as it arrives (bounded by back-pressure). When the parser reaches the end
    of the body the connection is detached and returned to the pool at once; whatever is still
    buffered stays readable here. ``content`` is the response itself, for code written against
    aiohttp's ``resp.content.readany()``.
    """

    __slots__ = (
        "__weakref__",
        "_chunks",
        "_conn",
        "_eof",
        "_exc",
        "_size",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )

    def __init__(self, conn: _Conn, status: int, headers: Headers, content_length: int | None) -> None:
        self.status = status
        self.headers = headers
        self.content_length = content_length
        self._conn: _Conn | None = conn
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Response {self.status}>"

    def __del__(self) -> None:
        # Safety net: a response dropped before its body ended must not keep a pool slot forever.
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # best effort at collection time (loop may be closed)
                conn.kill()

    @property
    def content(self) -> Response:
        return self

    @property
    def buffered(self) -> int:
        """Body bytes received but not read yet (introspection for tests and metrics)."""
        return self._size

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (it may still be buffered here, unread)."""
        return self._eof

    async def readany(self) -> bytes:
        """Everything that has arrived and was not read yet (waits for at least one byte);
        ``b""`` at the end of the body. Raises once the buffered bytes are exhausted if the body
        was cut short or malformed."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._exc is not None:
                raise self._exc
            await self._wait()
        return self._take()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`PayloadError` (and the connection closed) if it exceeds ``limit``."""
        length = self.content_length
        if limit is not None and not self._eof and length is not None and length > limit:
            self.close()
            raise PayloadError(f"response body of {length} bytes exceeds the {limit}-byte limit")
        if self._eof:
            data = self._take() if self._chunks else b""
        else:
            parts: list[bytes] = []
            size = 0
            while chunk := await self.readany():
                size += len(chunk)
                if limit is not None and size > limit:
                    self.close()
                    raise PayloadError(f"response body exceeds the {limit}-byte limit")
                parts.append(chunk)
            data = b"".join(parts)
        if limit is not None and len(data) > limit:
            raise PayloadError(f"response body exceeds the {limit}-byte limit")
        return data

    def release(self) -> None:
        """Done with this response. If its body already ended, the connection is back in the pool
        (or closed, without keep-alive) and this is a no-op; otherwise the connection is closed:
        draining an unknown rest of a body costs more than a new connection."""
        if self._conn is not None:
            self.close()

    def close(self) -> None:
        """Abort the connection now (the client went away mid-stream); later reads raise."""
        conn = self._conn
        self._fail(TransportError("the response was closed before the end of its body"))
        if conn is not None:
            conn.kill()

    # -- called by the connection ---------------------------------------------------------------

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    async def _wait(self) -> None:
        # (the connection's loop: asyncio.get_running_loop() costs a getpid system call in 3.11)
        conn = self._conn
        loop = conn._loop if conn is not None else asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> int:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return self._size

    def _finish(self) -> None:
        self._eof = True
        self._conn = None
        self._wake()

    def _fail(self, exc: TransportError) -> None:
        if self._exc is None and not self._eof:
            self._exc = exc
        self._conn = None
        self._wake()


# -- one connection --------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One upstream connection: writes requests, parses responses, feeds the current Response.

    At most one request is in flight (no pipelining). The parser's callbacks run inside
    ``data_received``; the end of a response puts the connection back in the pool right there.
    """

    __slots__ = (
        "_content_length",
        "_got_bytes",
        "_head",
        "_head_only",
        "_interim",
        "_junk",
        "_keep_alive",
        "_loop",
        "_parser",
        "_pool",
        "_raw",
        "_reset_parser",
        "_resp",
        "_transport",
        "_until_close",
        "counted",
        "idle_since",
        "paused",
        "state",
        "uses",
    )

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.state = _NEW
        self.counted = True  # holds one of the pool's max_connections slots until dropped
        self.paused = False
        self.idle_since = 0.0
        self.uses = 0
        self._head: asyncio.Future[Response] | None = None
        # Weak: a Response dropped by its reader must be collectable, so that it frees the connection.
        self._resp: weakref.ref[Response] | None = None
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_only = False
        self._got_bytes = False
        self._interim = False
        self._keep_alive = False
        self._until_close = False
        self._content_length: int | None = None
        self._reset_parser = False
        self._junk = False

    # -- used by the pool ----------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        transport = self._transport
        return self.state != _CLOSED and transport is not None and not transport.is_closing()

    def send(self, data: bytes, head_only: bool) -> asyncio.Future[Response]:
        """Write one request; the future resolves with the response head."""
        transport = self._transport
        if self.state == _CLOSED or transport is None or transport.is_closing():
            raise ServerDisconnected(
                f"upstream {self._pool.where} closed the connection before the request was sent",
                got_bytes=False,
            )
        self.state = _HEAD
        self.uses += 1
        self._head_only = head_only
        self._got_bytes = False
        head: asyncio.Future[Response] = self._loop.create_future()
        self._head = head
        transport.write(data)
        return head

    def kill(self, error: TransportError | None = None) -> None:
        """Close now (abort: unsent and unread bytes are dropped), fail whoever waits on this
        connection (with ``error`` if given), and give the slot back."""
        transport = self._transport
        if transport is not None and self.state != _CLOSED:
            transport.abort()
        self.state = _CLOSED
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error or self._disconnected("before answering", self._got_bytes))
        resp = self._current()
        if resp is not None:
            self._resp = None
            resp._fail(error or self._disconnected("before the end of the body", True))
        self._pool._drop(self)

    def _current(self) -> Response | None:
        ref = self._resp
        return None if ref is None else ref()

    def _disconnected(self, when: str, got_bytes: bool) -> ServerDisconnected:
        return ServerDisconnected(
            f"the connection to upstream {self._pool.where} was closed {when}", got_bytes=got_bytes
        )

    def resume(self) -> None:
        self.paused = False
        transport = self._transport
        if transport is not None and self.state != _CLOSED:
            transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not TCP, or a pseudo socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.state != _HEAD and self.state != _BODY:
            self.kill()  # unsolicited bytes on an idle connection: its framing can't be trusted
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._protocol_error("asked to switch protocols, which is not supported")
        except httptools.HttpParserError as exc:
            self._protocol_error(f"sent an invalid HTTP/1.1 response ({exc})")
        if self._reset_parser:
            self._reset_parser = False
            self._parser = httptools.HttpResponseParser(self)
            if self._junk:
                self.kill()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = _CLOSED
        self.paused = False
        if state == _HEAD:
            head = self._head
            if head is not None and not head.done():
                got = self._got_bytes
                what = "in the middle of the response head" if got else "without answering"
                head.set_exception(self._disconnected(what, got))
            return  # the request owns the slot (it may retry with it)
        resp = self._current()
        if resp is not None:
            self._resp = None
            if self._until_close and exc is None:
                resp._finish()  # the body was delimited by the close
            else:
                resp._fail(self._disconnected("before the end of the body", True))
        if state != _NEW:
            self._pool._drop(self)

    def _protocol_error(self, what: str) -> None:
        self.kill(PayloadError(f"upstream {self._pool.where} {what}"))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        raw = self._raw
        self._raw = []
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints...: wait for the real answer
            return
        if self.state != _HEAD:
            self._junk = True  # an answer nobody asked for
            self._reset_parser = True
            return
        content_length, chunked = _framing(raw)
        self._content_length = content_length
        no_body = self._head_only or status == 204 or status == 304
        self._until_close = not no_body and content_length is None and not chunked
        if self._head_only:
            self._keep_alive = _keep_alive(self._parser.get_http_version(), raw)
        else:
            self._keep_alive = self._parser.should_keep_alive()
        resp = Response(self, status, Headers(raw), content_length)
        self._resp = weakref.ref(resp)
        self.state = _BODY
        head = self._head
        self._head = None
        if head is not None and not head.done():
            head.set_result(resp)
        if self._head_only:
            # llhttp can't be told the request was HEAD: end the message here, start a new parser.
            self._reset_parser = True
            self._end_message()

    def on_body(self, body: bytes) -> None:
        resp = self._current()
        if resp is None or self.state != _BODY:
            self._junk = True
            self._reset_parser = True
            return
        if resp._feed(body) > self._pool.high_water and not self.paused:
            self.paused = True
            transport = self._transport
            if transport is not None:
                transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.state == _BODY:
            self._end_message()

    def _end_message(self) -> None:
        resp = self._current()
        self._resp = None
        if resp is not None:
            resp._finish()
        if self.paused:
            self.resume()
        if self._keep_alive and not self._until_close:
            self._pool._put_back(self)
        else:
            self.kill()


def _keep_alive(version: str, raw: list[tuple[bytes, bytes]]) -> bool:
    """Keep-alive from the version and ``Connection`` alone (for HEAD answers, where llhttp would
    wrongly count a missing Content-Length as "body until close")."""
    tokens: set[bytes] = set()
    for name, value in raw:
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if version == "1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens


def _framing(raw: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) from the raw headers; llhttp already rejected contradictions."""
    content_length: int | None = None
    chunked = False
    for name, value in raw:
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = None
        elif size == 17 and name.lower() == b"transfer-encoding":
            chunked = value.rstrip().lower().endswith(b"chunked")
    if chunked:
        content_length = None
    return content_length, chunked


# -- CONNECT tunnels ---------------------------------------------------------------------------------


class _Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``; the TLS session then starts on the same socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy_where: str) -> None:
        self.status: asyncio.Future[int] = loop.create_future()
        self._buf = bytearray()
        self._where = proxy_where

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_TUNNEL_HEAD:
                self._fail("sent an oversized answer to CONNECT")
            return
        first = bytes(self._buf[: self._buf.find(b"\r\n")]).split(b" ", 2)
        if len(first) < 2 or not first[0].startswith(b"HTTP/1.") or not first[1].isdigit():
            self._fail("sent an invalid answer to CONNECT")
            return
        status = int(first[1])
        if status == 200 and end + 4 != len(self._buf):
            self._fail("sent data after accepting CONNECT")  # the server speaks second in TLS
            return
        self.status.set_result(status)  # a refusal's body, if any, is ignored

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("closed the connection during CONNECT")

    def _fail(self, what: str) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectError(f"proxy {self._where} {what}"))


# -- the pool --------------------------------------------------------------------------------------


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """One verifying context per process: building one loads the CA store (milliseconds)."""
    return ssl.create_default_context()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Pool:
    """Keep-alive connections to one upstream origin (``scheme://host:port``), plus an optional
    path prefix prepended to every request path.

    Connections are reused LIFO (the most recently used one is the least likely to have been closed
    by the upstream's idle timeout); at most ``max_connections`` exist at once, and requests beyond
    that queue FIFO. Idle connections older than ``idle_timeout`` are never reused, and one timer
    per pool (not per request) closes them so they don't pile up.

    A pool belongs to the event loop of its first request; it is not thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        idle_timeout: float = 15.0,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        read_high_water: int = 256 * 1024,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if read_high_water < 1:
            raise ValueError("read_high_water must be >= 1")
        scheme, host, port, prefix = _parse_base_url(base_url)
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.where = _host_port(host, port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.high_water = read_high_water
        self._ssl = (ssl_context or _default_ssl_context()) if self.tls else None
        self._prefix = prefix
        default_port = 443 if self.tls else 80
        authority = host if ":" not in host else f"[{host}]"
        self._authority = authority if port == default_port else f"{authority}:{port}"
        self._origin = f"{scheme}://{self._authority}"
        self._host_line = f"Host: {self._authority}\r\n".encode("latin-1")
        self._proxy: tuple[str, int] | None = None
        self._proxy_auth: bytes = b""
        self._absolute_form = False
        if proxy is not None:
            self._configure_proxy(proxy)
        self._starts: dict[tuple[str, str], bytes] = {}
        self._idle: dict[_Conn, None] = {}  # insertion-ordered: oldest first, popitem() is LIFO
        self._conns: set[_Conn] = set()
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._open = 0
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _configure_proxy(self, proxy: str) -> None:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")  # "host:port" means http
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("only http:// proxies are supported (got a proxy URL with another scheme)")
        try:
            self._proxy = (parts.hostname, parts.port or 80)
        except ValueError:
            raise ValueError("the proxy URL has an invalid port") from None
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
            self._proxy_auth = f"Proxy-Authorization: Basic {token}\r\n".encode("ascii")
        if not self.tls:
            # Plain HTTP goes through the proxy as absolute-form requests (RFC 9112 §3.2.2).
            self._absolute_form = True
            self._host_line += self._proxy_auth

    # -- introspection ---------------------------------------------------------------------------

    @property
    def connections_open(self) -> int:
        """Connections open or being opened (each holds one of ``max_connections`` slots)."""
        return self._open

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- requests --------------------------------------------------------------------------------

    def prepare_headers(self, headers: Mapping[str, str]) -> bytes:
        """Encode static headers once, for every later :meth:`request`. ``Host``, ``Content-Length``
        and ``Transfer-Encoding`` are dropped: the pool writes the framing itself."""
        out: list[bytes] = []
        for name, value in headers.items():
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError("invalid header name")
            if name.lower() in _OWNED_HEADERS:
                continue
            if _BAD_VALUE_RE.search(value):
                raise ValueError(f"header {name!r} has a value with CR, LF or NUL")
            try:
                encoded = value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"header {name!r} has a value that is not latin-1") from None
            out.append(name.encode("ascii") + b": " + encoded + b"\r\n")
        return b"".join(out)

    async def request(self, method: str, path: str, headers: bytes, body: bytes = b"") -> Response:
        """Send a request and return as soon as the response head has arrived.

        ``headers`` come from :meth:`prepare_headers`. Redirects are never followed. A reused
        connection found closed before any byte of the answer arrived is retried once on a fresh
        connection: that is the stale keep-alive race (the upstream closed an idle connection as
        the request went out), in which it has not processed the request; failing that way
        on a fresh connection raises :class:`ServerDisconnected`, never a retry loop. If the caller
        is cancelled, the connection is closed (its state is unknown) and its slot freed.
        """
        data = self._encode(method, path, headers, body)
        head_only = method == "HEAD"
        conn = await self._acquire()
        reused = conn.uses > 0
        try:
            return await conn.send(data, head_only)
        except ServerDisconnected as exc:
            if exc.got_bytes or not reused or not conn.counted or self._closed:
                conn.kill()
                raise
        except BaseException:
            conn.kill()
            raise
        conn.counted = False  # the retry inherits the slot of the stale connection
        conn.kill()
        fresh = await self._connect()
        try:
            return await fresh.send(data, head_only)
        except BaseException:
            fresh.kill()
            raise

    def _encode(self, method: str, path: str, headers: bytes, body: bytes) -> bytes:
        start = self._starts.get((method, path))
        if start is None:
            start = self._start_line(method, path)
        if body or method not in _NO_BODY_METHODS:
            return b"%b%bContent-Length: %d\r\n\r\n%b" % (start, headers, len(body), body)
        return start + headers + b"\r\n"

    def _start_line(self, method: str, path: str) -> bytes:
        """Request line + Host (+ proxy credentials), cached per (method, path)."""
        if not _TOKEN_RE.fullmatch(method):
            raise ValueError("invalid request method")
        if not path.startswith("/") or _BAD_TARGET_RE.search(path) or not path.isascii():
            raise ValueError("request path must start with '/' and be percent-encoded ASCII")
        target = self._prefix + path
        if self._absolute_form:
            target = self._origin + target
        start = f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._host_line
        if len(self._starts) >= _START_LINE_CACHE:
            self._starts.clear()
        self._starts[(method, path)] = start
        return start

    # -- connection slots ------------------------------------------------------------------------

    async def _acquire(self) -> _Conn:
        """A connection for one request: an idle one (LIFO), a new one, or wait FIFO for either."""
        while True:
            if self._closed:
                raise TransportError("the connection pool is closed")
            conn = self._pop_idle()
            if conn is not None:
                return conn
            if self._open < self.max_connections:
                self._open += 1
                return await self._connect()
            granted = await self._wait_for_slot()
            if granted is None:
                return await self._connect()
            if granted.reusable:
                granted.state = _NEW
                return granted
            granted.kill()  # closed while being handed over; its slot went to the next in line

    def _pop_idle(self) -> _Conn | None:
        idle = self._idle
        if not idle:
            return None
        oldest_ok = self.loop.time() - self.idle_timeout
        while idle:
            conn, _ = idle.popitem()
            if conn.idle_since >= oldest_ok and conn.reusable:
                conn.state = _NEW
                return conn
            conn.kill()
        return None

    async def _wait_for_slot(self) -> _Conn | None:
        waiter: asyncio.Future[_Conn | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                granted = waiter.result()  # handed over just as we were cancelled: pass it on
                if granted is None:
                    self._release_slot()
                else:
                    self._put_back(granted)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _put_back(self, conn: _Conn) -> None:
        """A connection that finished a response with keep-alive: to a waiter, else the idle stack."""
        if self._closed or not conn.reusable:
            conn.kill()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                conn.state = _HANDOFF
                waiter.set_result(conn)
                return
        conn.state = _IDLE
        conn.idle_since = self.loop.time()
        self._idle[conn] = None
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_period(), self._sweep)

    def _drop(self, conn: _Conn) -> None:
        """Forget a dead connection and give its slot back (once)."""
        self._idle.pop(conn, None)
        self._conns.discard(conn)
        if conn.counted:
            conn.counted = False
            self._release_slot()

    def _release_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter opens a connection with this slot
                return
        self._open -= 1

    def _sweep_period(self) -> float:
        return max(self.idle_timeout / 2, 0.05)

    def _sweep(self) -> None:
        """Close idle connections past ``idle_timeout`` (oldest first), so idle sockets don't pile up."""
        self._sweeper = None
        idle = self._idle
        oldest_ok = self.loop.time() - self.idle_timeout
        while idle:
            conn = next(iter(idle))
            if conn.idle_since >= oldest_ok:
                break
            conn.kill()
        if idle and not self._closed:
            self._sweeper = self.loop.call_later(self._sweep_period(), self._sweep)

    # -- connecting ------------------------------------------------------------------------------

    async def _connect(self) -> _Conn:
        """Open a connection with a slot the caller already holds (released here on failure)."""
        conn = _Conn(self)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._proxy is not None and self.tls:
                    await self._open_tunnel(conn)
                else:
                    await self._open_direct(conn)
        except BaseException as exc:
            conn.state = _CLOSED
            transport = conn._transport
            if transport is not None:
                transport.abort()
            conn.counted = False
            self._release_slot()
            if isinstance(exc, TimeoutError):
                where = self._connect_where()
                seconds = self.connect_timeout
                raise ConnectError(f"timed out after {seconds:g}s connecting to {where}") from None
            raise
        if self._closed:
            conn.kill()
            raise TransportError("the connection pool is closed")
        self._conns.add(conn)
        return conn

    def _connect_where(self) -> str:
        if self._proxy is None:
            return self.where
        return f"{self.where} via proxy {_host_port(*self._proxy)}"

    async def _open_direct(self, conn: _Conn) -> None:
        host, port = self._proxy if self._proxy is not None else (self.host, self.port)
        where = self.where if self._proxy is None else f"proxy {_host_port(host, port)}"
        try:
            if self._ssl is not None:
                await self.loop.create_connection(
                    lambda: conn, host, port, ssl=self._ssl, server_hostname=self.host
                )
            else:
                await self.loop.create_connection(lambda: conn, host, port)
        except (OSError, ssl.SSLError) as exc:
            raise _connect_error(exc, where) from None

    async def _open_tunnel(self, conn: _Conn) -> None:
        """``CONNECT host:port`` through the proxy, then TLS to the upstream inside the tunnel."""
        assert self._proxy is not None and self._ssl is not None
        proxy_where = _host_port(*self._proxy)
        tunnel = _Tunnel(self.loop, proxy_where)
        try:
            raw, _ = await self.loop.create_connection(lambda: tunnel, *self._proxy)
        except OSError as exc:
            raise _connect_error(exc, f"proxy {proxy_where}") from None
        try:
            target = self.where.encode("ascii")
            raw.write(b"CONNECT %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (target, target, self._proxy_auth))
            status = await tunnel.status
            if status != 200:
                raise ConnectError(f"proxy {proxy_where} refused CONNECT to {self.where}: HTTP {status}")
            try:
                tls = await self.loop.start_tls(raw, conn, self._ssl, server_hostname=self.host)
            except (OSError, ssl.SSLError) as exc:
                raise _connect_error(exc, f"{self.where} via proxy {proxy_where}") from None
            if tls is None:  # pragma: no cover - only if the transport closed during the handshake
                raise ConnectError(f"proxy {proxy_where} closed the tunnel to {self.where}")
        except BaseException:
            raw.abort()
            raise
        conn.connection_made(tls)

    async def close(self) -> None:
        """Close every connection and fail every queued request; the pool can't be used afterwards."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TransportError("the connection pool is closed"))
        closed = TransportError("the connection pool is closed")
        for conn in list(self._idle) + list(self._conns):
            conn.kill(closed)
        await asyncio.sleep(0)  # let the transports run their connection_lost


def _connect_error(exc: BaseException, where: str) -> ConnectError:
    """A message that says what failed without leaking anything but ``where``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or "verification failed"
        return ConnectError(f"TLS certificate of {where} was rejected: {detail}")
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS handshake with {where} failed: {exc.reason or exc.__class__.__name__}")
    if isinstance(exc, OSError):
        if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
            detail = os.strerror(exc.errno)  # uniform across loops ("Connection refused")
        else:
            detail = exc.strerror or str(exc) or exc.__class__.__name__
        return ConnectError(f"could not connect to {where}: {detail}")
    return ConnectError(f"could not connect to {where}")  # pragma: no cover


def _parse_base_url(base_url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix without trailing '/'); ValueError for what we don't do."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("base_url must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in base_url are not supported")
    if not parts.hostname:
        raise ValueError("base_url has no host")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("base_url has an invalid port") from None
    prefix = parts.path.rstrip("/")
    if _BAD_TARGET_RE.search(prefix) or not prefix.isascii():
        raise ValueError("base_url path must be percent-encoded ASCII")
    return parts.scheme, parts.hostname, port, prefix
