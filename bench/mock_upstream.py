"""A very fast mock upstream for the benchmarks: OpenAI Chat Completions and Anthropic Messages.

Why raw asyncio + httptools instead of a web framework: the mock shares a core with the load
generator, so every microsecond it spends is taken from the load side. Responses are pre-built
bytes, the request body is never JSON-parsed (``"stream": true`` is found with a byte regex), and a
keep-alive connection costs one ``data_received`` and one ``write`` per request.

Endpoints:

- ``POST .../chat/completions``: a fixed small ``chat.completion``; with ``"stream": true`` a
  ``--chunks``-chunk SSE stream of ``chat.completion.chunk`` events then ``data: [DONE]``, sent with
  ``Transfer-Encoding: chunked`` like the real API.
- ``POST .../messages``: the Anthropic Messages API: a fixed ``message``; with ``"stream": true`` the
  real event sequence: ``message_start``, ``content_block_start``, ``ping``, ``--chunks``
  ``content_block_delta`` (``text_delta``) events, ``content_block_stop``, ``message_delta``,
  ``message_stop``.
- ``GET /healthz``, ``GET /v1/models``: for gateways that probe their backends.
- ``GET /mock/stats``: ``{"requests": N, "faults": F}``: how many completions were answered, and how
  many of them were faults (lets the harness check that a proxy really forwarded every request).

Pacing: ``--delay-ms`` (before the response) and ``--chunk-delay-ms`` (between stream chunks) set
defaults; the ``X-Mock-Delay-Ms`` and ``X-Mock-Chunk-Delay-Ms`` request headers override them per
request. Without chunk pacing the whole stream is one ``write`` (the cheapest for the mock); with
pacing each chunk is its own write, as a real token-by-token upstream would send it.

Two modes for the checks that need more than speed (each costs a regex or two per request, so the
plain benchmarks leave them off):

- ``--echo`` (the soak test): a request whose text holds ``n=<hex nonce>`` gets an answer built for
  it: its text is the pieces ``"<nonce>.0 "``, ``"<nonce>.1 "``, … (``--chunks`` − 1 of them, one per
  stream chunk, in both API formats), so a client can tell its own answer from anyone else's. The
  text may also ask for a fault: ``f=500`` (an HTTP 500 with the API's error body), ``f=cut`` (the
  connection is closed in the middle of the answer: half the body, or a stream cut after a few
  events), ``f=slow`` (the answer comes after ``--slow-ms``).
- ``--stamp`` (the slow-streams test): each content chunk of a paced OpenAI stream carries the
  moment it was written, ``t=<CLOCK_MONOTONIC ns>`` (the same clock in every process of the
  machine), and the stream has as many content chunks as the request's ``max_tokens``.

Run: ``python -m bench.mock_upstream --port 18090`` (prints ``READY <port>`` once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import re
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
import uvloop

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_NONCE_RE = re.compile(rb"\bn=([0-9a-f]{6,40})\b")
_FAULT_RE = re.compile(rb"\bf=(500|cut|slow)\b")
_MAX_TOKENS_RE = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
_CREATED = 1_700_000_000
_CUT_AFTER_EVENTS = 4  # a cut stream sends this many events, then the connection is closed
MAX_STAMPED_CHUNKS = 100_000
_STAMP = "@STAMP@"  # where --stamp puts a chunk's write time

Frames = Callable[[int], bytes]  # index -> one SSE event framed as one HTTP chunk


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Defaults for every request (headers may override the two delays)."""

    chunks: int = 20
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    model: str = "mock-model"
    echo: bool = False
    stamp: bool = False
    slow_ms: float = 1000.0


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_REASONS = {200: b"OK", 404: b"Not Found", 500: b"Internal Server Error"}


def whole(status: int, body: bytes, *, close: bool = False, ctype: bytes = b"application/json") -> bytes:
    """A complete response with a Content-Length body."""
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Status"),
        ctype,
        len(body),
        conn,
        body,
    )


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
STREAM_HEAD_CLOSE = STREAM_HEAD[:-2] + b"Connection: close\r\n\r\n"
STREAM_END = b"0\r\n\r\n"  # the terminating zero-length chunk


# -- the two API formats -----------------------------------------------------------------------------


def openai_completion(model: str, text: str) -> bytes:
    return _json(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        }
    )


def openai_events(model: str, pieces: list[str]) -> list[bytes]:
    """One ``chat.completion.chunk`` per piece, then one with ``finish_reason``, then ``[DONE]``."""
    deltas: list[dict[str, str]] = [{"content": p} for p in pieces] + [{}]
    deltas[0] = {"role": "assistant", **deltas[0]}
    events = []
    for i, delta in enumerate(deltas):
        last = i == len(deltas) - 1
        chunk = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
        }
        events.append(b"data: " + _json(chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_message(model: str, text: str) -> bytes:
    return _json(
        {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 7},
        }
    )


def _sse(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _json(data) + b"\n\n"


def anthropic_events(model: str, pieces: list[str]) -> list[bytes]:
    """The Messages API's stream for one text block, one ``text_delta`` per piece."""
    message: dict[str, object] = {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 1},
    }
    events = [
        _sse("message_start", {"type": "message_start", "message": message}),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _sse("ping", {"type": "ping"}),
    ]
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(_sse("content_block_delta", delta))
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return events


@dataclass(frozen=True, slots=True)
class Wire:
    """One API format: how to build its answers, and the fixed ones built once at start."""

    name: str
    whole: Callable[[str, str], bytes]  # (model, text) -> body
    events: Callable[[str, list[str]], list[bytes]]  # (model, pieces) -> SSE events
    error_body: bytes
    completion: bytes
    completion_close: bytes
    stream_frames: tuple[bytes, ...]
    stream_all: bytes
    error_500: bytes

    @classmethod
    def build(
        cls,
        name: str,
        whole_body: Callable[[str, str], bytes],
        events: Callable[[str, list[str]], list[bytes]],
        error_body: bytes,
        pieces: list[str],
        model: str,
    ) -> Wire:
        body = whole_body(model, "Hello from the mock upstream.")
        frames = tuple(_http_chunk(e) for e in events(model, pieces))
        return cls(
            name=name,
            whole=whole_body,
            events=events,
            error_body=error_body,
            completion=whole(200, body),
            completion_close=whole(200, body, close=True),
            stream_frames=frames,
            stream_all=b"".join(frames) + STREAM_END,
            error_500=whole(500, error_body),
        )


def echo_pieces(nonce: str, chunks: int) -> list[str]:
    """The text pieces of an answer to the request carrying ``nonce`` (``--echo``)."""
    return [f"{nonce}.{i} " for i in range(max(0, chunks - 1))]


class _Responses:
    """Every byte string the plain benchmarks ever send, built once at start."""

    def __init__(self, cfg: MockConfig) -> None:
        # OpenAI: the last of the --chunks chunks carries finish_reason instead of text.
        self.openai = Wire.build(
            "openai",
            openai_completion,
            openai_events,
            b'{"error":{"message":"mock fault","type":"server_error","param":null,"code":null}}',
            [f"tok{i} " for i in range(cfg.chunks - 1)],
            cfg.model,
        )
        # Anthropic: --chunks text deltas (message_delta carries the stop reason).
        self.anthropic = Wire.build(
            "anthropic",
            anthropic_message,
            anthropic_events,
            b'{"type":"error","error":{"type":"api_error","message":"mock fault"}}',
            [f"tok{i} " for i in range(cfg.chunks)],
            cfg.model,
        )
        self.health = whole(200, b'{"status":"ok"}')
        models = _json({"object": "list", "data": [{"id": cfg.model, "object": "model", "owned_by": "mock"}]})
        self.models = whole(200, models)
        self.not_found = whole(404, b'{"error":{"message":"not found"}}')
        # --stamp: an OpenAI content chunk is prefix + b"t=<ns>" + suffix, built when written.
        second = openai_events(cfg.model, ["", _STAMP])[1]  # a content chunk without "role"
        self.stamp_prefix, self.stamp_suffix = second.split(_STAMP.encode())
        self.stamp_tail = b"".join(_http_chunk(e) for e in openai_events(cfg.model, [])[-2:])


class _Request:
    __slots__ = (
        "chunk_delay",
        "chunks",
        "delay",
        "fault",
        "keep_alive",
        "method",
        "nonce",
        "stream",
        "url",
    )

    def __init__(
        self, method: bytes, url: bytes, stream: bool, delay: float, chunk_delay: float, keep_alive: bool
    ) -> None:
        self.method = method
        self.url = url
        self.stream = stream
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.keep_alive = keep_alive
        self.nonce: str | None = None  # --echo
        self.fault: bytes | None = None  # --echo: b"500", b"cut" or b"slow"
        self.chunks = 0  # --stamp: content chunks to send (0: not a stamped stream)


class MockServer:
    """Shared state of all connections: the pre-built responses and the counters."""

    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.responses = _Responses(cfg)
        self.requests = 0
        self.faults = 0

    def protocol(self) -> MockProtocol:
        return MockProtocol(self)


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection. Requests are answered strictly in order (pipelining-safe)."""

    def __init__(self, server: MockServer) -> None:
        self._server = server
        self._r = server.responses
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._delay: float | None = None
        self._chunk_delay: float | None = None
        self._queue: deque[_Request] = deque()
        self._busy = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()

    # -- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._delay = None
        self._chunk_delay = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > 7 and name[:7].lower() == b"x-mock-":
            lname = name.lower()
            with contextlib.suppress(ValueError):
                if lname == b"x-mock-delay-ms":
                    self._delay = float(value) / 1000.0
                elif lname == b"x-mock-chunk-delay-ms":
                    self._chunk_delay = float(value) / 1000.0

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        cfg = self._server.cfg
        body = b"".join(self._body) if self._body else b""
        req = _Request(
            self._parser.get_method(),
            self._url,
            _STREAM_RE.search(body) is not None,
            cfg.delay_ms / 1000.0 if self._delay is None else self._delay,
            cfg.chunk_delay_ms / 1000.0 if self._chunk_delay is None else self._chunk_delay,
            self._parser.should_keep_alive(),
        )
        if cfg.echo:
            nonce, fault = _NONCE_RE.search(body), _FAULT_RE.search(body)
            if nonce is not None:
                req.nonce = nonce.group(1).decode()
            if fault is not None:
                req.fault = fault.group(1)
                if req.fault == b"slow":
                    req.delay = max(req.delay, cfg.slow_ms / 1000.0)
        if cfg.stamp and req.stream:
            found = _MAX_TOKENS_RE.search(body)
            req.chunks = min(MAX_STAMPED_CHUNKS, max(1, int(found.group(1)) if found else cfg.chunks))
        self._queue.append(req)
        if not self._busy:
            self._next()

    # -- responses ---------------------------------------------------------------------------
    def _next(self) -> None:
        while self._queue and self._transport is not None:
            req = self._queue.popleft()
            self._busy = True
            if req.delay > 0:
                asyncio.get_running_loop().call_later(req.delay, self._respond, req)
                return
            if not self._respond(req):
                return  # a paced stream is in progress; it calls _next() when done
        self._busy = False

    def _respond(self, req: _Request) -> bool:
        """Answer ``req``; return False if the answer continues asynchronously (paced stream)."""
        t = self._transport
        if t is None:
            return True
        path = req.url.split(b"?", 1)[0]
        r = self._r
        wire: Wire | None = None
        if req.method == b"POST":
            if path.endswith(b"/chat/completions"):
                wire = r.openai
            elif path.endswith(b"/messages"):
                wire = r.anthropic
        if wire is not None:
            self._server.requests += 1
            if req.nonce is not None or req.fault is not None or req.chunks:
                return self._special(req, wire, t)
            if req.stream:
                head = STREAM_HEAD if req.keep_alive else STREAM_HEAD_CLOSE
                if req.chunk_delay > 0:
                    t.write(head)
                    self._paced(req, wire.stream_frames.__getitem__, len(wire.stream_frames), 0)
                    return False
                t.write(head + wire.stream_all)
            else:
                t.write(wire.completion if req.keep_alive else wire.completion_close)
        elif req.method == b"GET" and path == b"/mock/stats":
            body = b'{"requests":%d,"faults":%d}' % (self._server.requests, self._server.faults)
            t.write(whole(200, body))
        elif req.method == b"GET" and path == b"/healthz":
            t.write(r.health)
        elif req.method == b"GET" and path.endswith(b"/models"):
            t.write(r.models)
        else:
            t.write(r.not_found)
        return self._done(req)

    def _done(self, req: _Request) -> bool:
        if not req.keep_alive:
            self._close()
        elif self._busy and req.delay > 0:
            # We were called from call_later: carry on with whatever queued meanwhile.
            self._next()
        return True

    def _special(self, req: _Request, wire: Wire, t: asyncio.Transport) -> bool:
        """Echo answers, faults (``--echo``) and stamped streams (``--stamp``)."""
        model = self._server.cfg.model
        if req.fault == b"500":
            self._server.faults += 1
            t.write(wire.error_500)
            return self._done(req)
        if req.chunks and wire is self._r.openai and req.nonce is None:
            t.write(STREAM_HEAD if req.keep_alive else STREAM_HEAD_CLOSE)
            self._paced(req, self._stamped_frame(req.chunks), req.chunks + 1, 0)
            return False
        pieces = echo_pieces(req.nonce or "none", self._server.cfg.chunks)
        cut = req.fault == b"cut"
        if cut:
            self._server.faults += 1
        if not req.stream:
            body = wire.whole(model, "".join(pieces))
            if cut:
                t.write(whole(200, body)[: -len(body) // 2])
                self._close()
                return True
            t.write(whole(200, body, close=not req.keep_alive))
            return self._done(req)
        frames = [_http_chunk(e) for e in wire.events(model, pieces)]
        head = STREAM_HEAD if req.keep_alive else STREAM_HEAD_CLOSE
        if cut:
            t.write(head + b"".join(frames[:_CUT_AFTER_EVENTS]))
            self._close()
            return True
        if req.chunk_delay > 0:
            t.write(head)
            self._paced(req, frames.__getitem__, len(frames), 0)
            return False
        t.write(head + b"".join(frames) + STREAM_END)
        return self._done(req)

    def _stamped_frame(self, chunks: int) -> Frames:
        """Frame ``i`` of a stamped stream: content chunks with their write time, then the end."""
        r = self._r

        def frame(i: int) -> bytes:
            if i == chunks:
                return r.stamp_tail  # the finish_reason chunk and [DONE]
            return _http_chunk(r.stamp_prefix + b"t=%d" % time.monotonic_ns() + r.stamp_suffix)

        return frame

    def _paced(self, req: _Request, frame: Frames, count: int, index: int) -> None:
        t = self._transport
        if t is None:
            return
        t.write(frame(index))
        if index + 1 < count:
            asyncio.get_running_loop().call_later(req.chunk_delay, self._paced, req, frame, count, index + 1)
            return
        t.write(STREAM_END)
        if not req.keep_alive:
            self._close()
            return
        self._next()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def serve(cfg: MockConfig, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    server = MockServer(cfg)
    srv = await loop.create_server(server.protocol, host, port, backlog=4096, reuse_address=True)
    bound = srv.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gc.collect()
    gc.freeze()
    print(f"READY {bound}", flush=True)
    await stop.wait()
    srv.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18090, help="0 picks a free port (printed in READY)")
    ap.add_argument(
        "--chunks",
        type=int,
        default=20,
        help="stream chunks: OpenAI events ([DONE] excluded), Anthropic deltas",
    )
    ap.add_argument("--delay-ms", type=float, default=0.0, help="delay before each response")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks")
    ap.add_argument("--model", default="mock-model", help="model name in the responses")
    ap.add_argument("--echo", action="store_true", help="answers carry the request's n=<nonce>; f=<fault>")
    ap.add_argument("--stamp", action="store_true", help="paced OpenAI stream chunks carry their write time")
    ap.add_argument("--slow-ms", type=float, default=1000.0, help="delay of the f=slow fault")
    args = ap.parse_args(argv)
    if args.chunks < 1:
        ap.error("--chunks must be >= 1")
    cfg = MockConfig(
        chunks=args.chunks,
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        model=args.model,
        echo=args.echo,
        stamp=args.stamp,
        slow_ms=args.slow_ms,
    )
    uvloop.run(serve(cfg, args.host, args.port))


if __name__ == "__main__":
    main()
