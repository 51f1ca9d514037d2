"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

Why not aiohttp or httpx as the client: at ~20k req/s a general client spends more CPU per request
than the proxy under test, and the load side only has one core (shared with the mock upstream).
Here a connection is an ``asyncio.Protocol`` fed into httptools' response parser (which also decodes
chunked bodies): the request is a pre-built byte string, and the next request is written from the
``on_message_complete`` callback, with no coroutine, future or task per request.

A run has a warm-up phase then a measured window on the same connections (so connection setup and
cold caches are not measured); only requests that *complete* inside the window count. It is bounded
by the window's length and by ``max_requests``, and after the window a hard ``grace_s`` deadline
abandons whatever is still in flight (counted as timeouts), so a run always stops by itself.

For streams it also records the time to the first body bytes (TTFC, the first SSE event) and checks
that the body ended the way its API format ends a stream: ``data: [DONE]`` for OpenAI,
``event: message_stop`` for Anthropic (see :data:`APIS`).

Run: ``python -m bench.loadgen --port 18090 -c 16 -d 5 [--stream] [--api anthropic]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import uvloop

DEFAULT_PATH = "/v1/chat/completions"


def chat_body(model: str = "hint:fast", *, stream: bool = False, content: str = "Say hello.") -> bytes:
    """The request body every scenario sends: small, like a short chat turn."""
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream},
        separators=(",", ":"),
    ).encode()


def anthropic_body(model: str = "hint:fast", *, stream: bool = False, content: str = "Say hello.") -> bytes:
    """The same chat turn as :func:`chat_body`, as an Anthropic Messages API request."""
    return json.dumps(
        {
            "model": model,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": content}],
            "stream": stream,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True, slots=True)
class Api:
    """A client API format: where its requests go, their body, and how its streams end."""

    name: str
    path: str
    body: Callable[..., bytes]  # (model, *, stream, content) -> request body
    stream_end: bytes  # must be in the last bytes of a stream that ended properly


APIS: dict[str, Api] = {
    "openai": Api("openai", DEFAULT_PATH, chat_body, b"data: [DONE]"),
    "anthropic": Api("anthropic", "/v1/messages", anthropic_body, b"event: message_stop"),
}
TAIL_BYTES = 64  # how much of a stream's end is kept to look for its end marker


def build_request(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: Iterable[tuple[str, str]] = (),
    method: str = "POST",
) -> bytes:
    """The exact bytes of one request, sent as-is on every iteration."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: lm-gateway-bench"]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if method == "POST" else b"")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, how hard, and for how long."""

    port: int
    host: str = "127.0.0.1"
    path: str = DEFAULT_PATH
    body: bytes = field(default_factory=chat_body)
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 16
    duration_s: float = 5.0
    warmup_s: float = 1.0
    max_requests: int = 10_000_000
    stream: bool = False
    stream_end: bytes = APIS["openai"].stream_end
    grace_s: float = 10.0
    connect_timeout_s: float = 5.0


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds."""
    values.sort()
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0)):
        v = percentile(values, q)
        out[name] = None if v is None else round(v * 1000.0, 4)
    out["max"] = round(values[-1] * 1000.0, 4) if values else None
    out["mean"] = round(sum(values) / len(values) * 1000.0, 4) if values else None
    return out


class _Run:
    """State shared by the connections of one run."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.request = build_request(spec.host, spec.port, spec.path, spec.body, spec.headers)
        self.loop = asyncio.get_running_loop()
        self.measure_start = 0.0
        self.measure_end = 0.0
        self.issued = 0
        self.in_window = 0
        self.latencies: list[float] = []
        self.ttfc: list[float] = []
        self.errors: Counter[str] = Counter()
        self.bytes_received = 0
        self.stopping = False
        self.conns: set[_Conn] = set()
        self.idle = asyncio.Event()

    def may_issue(self, now: float) -> bool:
        if self.stopping or now >= self.measure_end or self.in_window >= self.spec.max_requests:
            self.stopping = True
            return False
        return True

    def record(self, start: float, end: float, first: float, ok: bool, error: str) -> None:
        if start >= self.measure_start and end <= self.measure_end:
            if ok:
                self.in_window += 1
                self.latencies.append(end - start)
                if first:
                    self.ttfc.append(first - start)
            else:
                self.errors[error] += 1

    def conn_idle(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if not self.conns:
            self.idle.set()

    def open_connection(self) -> None:
        """Open a (re)placement connection without blocking the caller."""
        conn = _Conn(self)
        self.conns.add(conn)
        self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: _Conn) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, self.spec.host, self.spec.port),
                self.spec.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            now = time.perf_counter()
            self.record(now, now, 0.0, False, f"connect: {type(exc).__name__}")
            # Do not spin on a dead target: back off a little, then retry while the run lasts.
            await asyncio.sleep(0.05)
            if self.may_issue(time.perf_counter()):
                self.conns.discard(conn)
                self.open_connection()
            else:
                self.conn_idle(conn)


class _Conn(asyncio.Protocol):
    """One keep-alive connection running requests back to back."""

    __slots__ = ("_first", "_parser", "_run", "_start", "_tail", "_transport")

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._start = 0.0  # 0.0 = no request in flight
        self._first = 0.0
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        run = self._run
        now = time.perf_counter()
        if self._transport is None or not run.may_issue(now):
            self._finish()
            return
        run.issued += 1
        self._first = 0.0
        self._tail = b""
        self._start = now
        self._transport.write(run.request)

    def _finish(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._run.conn_idle(self)

    def data_received(self, data: bytes) -> None:
        self._run.bytes_received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"parse: {exc}")

    def on_body(self, body: bytes) -> None:
        if not self._first:
            self._first = time.perf_counter()
        if self._run.spec.stream:
            self._tail = (self._tail + body)[-TAIL_BYTES:]

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        run = self._run
        status = self._parser.get_status_code()
        ok = 200 <= status < 300
        error = "" if ok else f"http {status}"
        if ok and run.spec.stream and run.spec.stream_end not in self._tail:
            ok, error = False, f"stream without {run.spec.stream_end.decode()}"
        run.record(self._start, end, self._first if run.spec.stream else 0.0, ok, error)
        self._start = 0.0
        if self._parser.should_keep_alive():
            self._send()
        else:
            self._replace()

    def _fail(self, error: str) -> None:
        if self._start:
            now = time.perf_counter()
            self._run.record(self._start, now, 0.0, False, error)
            self._start = 0.0
        self._replace()

    def _replace(self) -> None:
        """The server closed (or will close) this connection: open another while the run lasts."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        run = self._run
        run.conns.discard(self)
        if run.may_issue(time.perf_counter()):
            run.open_connection()
        elif not run.conns:
            run.idle.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # we closed it ourselves
        self._transport = None
        if self._start:
            self._fail("closed mid-response" if exc is None else f"conn: {type(exc).__name__}")
        elif self in self._run.conns:
            self._replace()

    def abort(self) -> None:
        if self._start:
            self._run.errors["timeout"] += 1
            self._start = 0.0
        if self._transport is not None:
            self._transport.abort()
            self._transport = None


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Run one load and return its figures (latencies in ms)."""
    run = _Run(spec)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a pause of ours here would be counted as latency of the target
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    run.measure_start = t0 + spec.warmup_s
    run.measure_end = run.measure_start + spec.duration_s
    try:
        for _ in range(spec.concurrency):
            run.open_connection()
        # Wait for the end of the window, or for every connection to have stopped (count reached).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.idle.wait(), spec.warmup_s + spec.duration_s)
        window_end = min(time.perf_counter(), run.measure_end)
        run.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.idle.wait(), spec.grace_s)
        for conn in list(run.conns):
            conn.abort()
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed = time.perf_counter() - t0
    window = max(1e-9, window_end - run.measure_start)
    ok = len(run.latencies)
    result: dict[str, Any] = {
        "concurrency": spec.concurrency,
        "stream": spec.stream,
        "duration_s": round(window, 3),
        "warmup_s": spec.warmup_s,
        "requests": ok,
        "issued": run.issued,  # all requests sent, warm-up and stragglers included
        "errors": sum(run.errors.values()),
        "error_kinds": dict(run.errors.most_common(5)),
        "rps": round(ok / window, 1),
        "latency_ms": summarize(run.latencies),
        "loadgen_cpu": round((time.process_time() - cpu0) / max(elapsed, 1e-9), 3),
    }
    if spec.stream:
        result["ttfc_ms"] = summarize(run.ttfc)
    return result


async def fetch_once(
    port: int,
    host: str = "127.0.0.1",
    path: str = DEFAULT_PATH,
    body: bytes | None = None,
    method: str = "POST",
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body). Raises OSError/TimeoutError if it fails."""
    if body is None:
        body = chat_body()
    raw = build_request(host, port, path, body, (("Connection", "close"),), method=method)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
    chunks: list[bytes] = []

    class _Once(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            cast(asyncio.Transport, transport).write(raw)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if not done.done():
                    done.set_exception(OSError(f"bad response: {exc}"))

        def on_body(self, data: bytes) -> None:
            chunks.append(data)

        def on_message_complete(self) -> None:
            if not done.done():
                done.set_result((self.parser.get_status_code(), b"".join(chunks)))

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_exception(OSError(f"connection closed before a response ({exc})"))

    async def go() -> tuple[int, bytes]:
        transport, _ = await loop.create_connection(_Once, host, port)
        try:
            return await done
        finally:
            transport.close()

    return await asyncio.wait_for(go(), timeout_s)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Cheap synchronous check that something listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="closed-loop HTTP/1.1 load generator (prints JSON)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api", choices=sorted(APIS), default="openai", help="client API format")
    ap.add_argument("--path", help="request path (default: the API's)")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-d", "--duration", type=float, default=5.0, help="measured window, seconds")
    ap.add_argument("-w", "--warmup", type=float, default=1.0, help="warm-up before the window, seconds")
    ap.add_argument("-n", "--max-requests", type=int, default=10_000_000, help="stop after N in the window")
    ap.add_argument("--stream", action="store_true", help='send "stream": true, measure TTFC')
    ap.add_argument("--model", default="hint:fast")
    ap.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value'")
    args = ap.parse_args(argv)
    headers = tuple(tuple(h.split(":", 1)) for h in args.header)
    api = APIS[args.api]
    spec = LoadSpec(
        port=args.port,
        host=args.host,
        path=args.path or api.path,
        body=api.body(args.model, stream=args.stream),
        headers=tuple((k.strip(), v.strip()) for k, v in headers),
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        max_requests=args.max_requests,
        stream=args.stream,
        stream_end=api.stream_end,
    )
    print(json.dumps(uvloop.run(run_load(spec)), indent=2))


if __name__ == "__main__":
    main()
