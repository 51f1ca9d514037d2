"""A very fast mock OpenAI upstream for the benchmarks.

Why raw asyncio + httptools instead of a web framework: the mock shares a core with the load
generator, so every microsecond it spends is taken from the load side. Responses are pre-built
bytes, the request body is never JSON-parsed (``"stream": true`` is found with a byte regex), and a
keep-alive connection costs one ``data_received`` and one ``write`` per request.

Endpoints:

- ``POST .../chat/completions``: a fixed small ``chat.completion``; with ``"stream": true`` a
  ``--chunks``-chunk SSE stream of ``chat.completion.chunk`` events then ``data: [DONE]``, sent with
  ``Transfer-Encoding: chunked`` like the real API.
- ``GET /healthz``, ``GET /v1/models``: for gateways that probe their backends.
- ``GET /mock/stats``: ``{"requests": N}``, how many completions were answered (lets the harness
  check that a proxy really forwarded every request).

Pacing: ``--delay-ms`` (before the response) and ``--chunk-delay-ms`` (between stream chunks) set
defaults; the ``X-Mock-Delay-Ms`` and ``X-Mock-Chunk-Delay-Ms`` request headers override them per
request. Without chunk pacing the whole stream is one ``write`` (the cheapest for the mock); with
pacing each chunk is its own write, as a real token-by-token upstream would send it.

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
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools
import uvloop

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_CREATED = 1_700_000_000


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Defaults for every request (headers may override the two delays)."""

    chunks: int = 20
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    model: str = "mock-model"


class _Responses:
    """Every byte string the mock ever sends, built once at start."""

    def __init__(self, cfg: MockConfig) -> None:
        body = _json(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": _CREATED,
                "model": cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            }
        )
        self.completion = self._whole(200, b"application/json", body)
        self.completion_close = self._whole(200, b"application/json", body, close=True)
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.stream_head_close = self.stream_head[:-2] + b"Connection: close\r\n\r\n"
        events = [self._event(cfg.model, i, cfg.chunks) for i in range(cfg.chunks)]
        events.append(b"data: [DONE]\n\n")
        # Each SSE event framed as one HTTP chunk; the terminating zero-length chunk goes last.
        self.stream_frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        self.stream_end = b"0\r\n\r\n"
        self.stream_all = b"".join(self.stream_frames) + self.stream_end
        self.health = self._whole(200, b"application/json", b'{"status":"ok"}')
        models = _json({"object": "list", "data": [{"id": cfg.model, "object": "model", "owned_by": "mock"}]})
        self.models = self._whole(200, b"application/json", models)
        self.not_found = self._whole(404, b"application/json", b'{"error":{"message":"not found"}}')

    @staticmethod
    def _whole(status: int, ctype: bytes, body: bytes, *, close: bool = False) -> bytes:
        reason = b"OK" if status == 200 else b"Not Found"
        conn = b"Connection: close\r\n" if close else b""
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
            status,
            reason,
            ctype,
            len(body),
            conn,
            body,
        )

    @staticmethod
    def _event(model: str, i: int, n: int) -> bytes:
        last = i == n - 1
        delta: dict[str, str] = {"role": "assistant"} if i == 0 else {}
        if not last:
            delta["content"] = f"tok{i} "
        chunk = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
        }
        return b"data: " + _json(chunk) + b"\n\n"


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Request:
    __slots__ = ("chunk_delay", "delay", "keep_alive", "method", "stream", "url")

    def __init__(
        self, method: bytes, url: bytes, stream: bool, delay: float, chunk_delay: float, keep_alive: bool
    ) -> None:
        self.method = method
        self.url = url
        self.stream = stream
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.keep_alive = keep_alive


class MockServer:
    """Shared state of all connections: the pre-built responses and the request counter."""

    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.responses = _Responses(cfg)
        self.requests = 0

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
        self._queue.append(
            _Request(
                self._parser.get_method(),
                self._url,
                _STREAM_RE.search(body) is not None,
                cfg.delay_ms / 1000.0 if self._delay is None else self._delay,
                cfg.chunk_delay_ms / 1000.0 if self._chunk_delay is None else self._chunk_delay,
                self._parser.should_keep_alive(),
            )
        )
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
        if req.method == b"POST" and path.endswith(b"/chat/completions"):
            self._server.requests += 1
            if req.stream:
                if req.chunk_delay > 0:
                    t.write(r.stream_head if req.keep_alive else r.stream_head_close)
                    self._paced(req, 0)
                    return False
                t.write((r.stream_head if req.keep_alive else r.stream_head_close) + r.stream_all)
            else:
                t.write(r.completion if req.keep_alive else r.completion_close)
        elif req.method == b"GET" and path == b"/mock/stats":
            body = b'{"requests":%d}' % self._server.requests
            t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        elif req.method == b"GET" and path == b"/healthz":
            t.write(r.health)
        elif req.method == b"GET" and path.endswith(b"/models"):
            t.write(r.models)
        else:
            t.write(r.not_found)
        if not req.keep_alive:
            self._close()
        elif self._busy and req.delay > 0:
            # We were called from call_later: carry on with whatever queued meanwhile.
            self._next()
        return True

    def _paced(self, req: _Request, index: int) -> None:
        t = self._transport
        if t is None:
            return
        frames = self._r.stream_frames
        t.write(frames[index])
        if index + 1 < len(frames):
            asyncio.get_running_loop().call_later(req.chunk_delay, self._paced, req, index + 1)
            return
        t.write(self._r.stream_end)
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
    srv = await loop.create_server(server.protocol, host, port, backlog=2048, reuse_address=True)
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
    ap.add_argument("--chunks", type=int, default=20, help="SSE events per stream, [DONE] excluded")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="delay before each response")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks")
    ap.add_argument("--model", default="mock-model", help="model name in the responses")
    args = ap.parse_args(argv)
    if args.chunks < 1:
        ap.error("--chunks must be >= 1")
    cfg = MockConfig(
        chunks=args.chunks, delay_ms=args.delay_ms, chunk_delay_ms=args.chunk_delay_ms, model=args.model
    )
    coro = serve(cfg, args.host, args.port)
    uvloop.run(coro)


if __name__ == "__main__":
    main()
