"""Many slow streams at once (issue #8): is any chunk held up inside the target?

512 connections each open one OpenAI stream against the ``slow`` mock flavour, which writes a chunk
every 50 ms (200 chunks, 10 s; ``--quick``: 40 chunks) and puts in each chunk the moment it wrote it
(``t=<CLOCK_MONOTONIC ns>``, ``bench.mock_upstream --stamp``). On arrival here the same clock is read
again (the mock, the target and this process run on one machine, and ``CLOCK_MONOTONIC`` is
system-wide), so for every chunk:

- **added delay** = arrival time here − write time at the mock: the time the chunk spent in the
  target (plus the loopback and this process's own event-loop lag, which ``direct`` measures alone);
- **stall** = a gap of more than 200 ms between two consecutive chunks of one stream (the mock
  sends one every 50 ms).

The streams start spread evenly over one 50 ms interval, as independent clients would, rather than
all on the same millisecond (then every 50 ms the target would get a burst of 512 chunks at once, a
different test). A stream counts as complete when it ends with ``data: [DONE]``. Everything is
bounded: after the streams' nominal length plus ``GRACE_S``, what is still open is aborted and
counted as incomplete.

Run through the harness: ``python -m bench --only slow512 [--quick]`` (direct, the bare proxy and
lm-gateway, one after the other). Standalone against something already listening:
``python -m bench.slow_streams --port 8080 [--streams 512] [--chunks 200]`` (needs a ``--stamp`` mock
behind it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import re
import resource
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httptools
import uvloop

from bench.loadgen import build_request, chat_body, summarize

if TYPE_CHECKING:
    from bench.scenarios import ScenarioRun

SLOW_CHUNK_MS = 50
FULL_CHUNKS = 200
QUICK_CHUNKS = 40
STALL_MS = 200.0
GRACE_S = 10.0
_STAMP_RE = re.compile(rb"t=(\d+)")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


@dataclass
class _Totals:
    """What all the streams of one run measured."""

    delays_s: list[float] = field(default_factory=list)  # per chunk: arrival - write
    gaps_s: list[float] = field(default_factory=list)  # per stream, between consecutive chunks
    ttfc_s: list[float] = field(default_factory=list)  # per stream: request written -> first chunk
    complete: int = 0
    chunks: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Stream(asyncio.Protocol):
    """One connection carrying one stamped stream."""

    def __init__(self, request: bytes, totals: _Totals, done: asyncio.Event, pending: set[_Stream]) -> None:
        self._request = request
        self._totals = totals
        self._done = done
        self._pending = pending
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._tail = b""
        self._now = 0
        self._sent = 0
        self._last = 0
        self._finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._sent = time.monotonic_ns()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._now = time.monotonic_ns()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.finish(f"parse: {exc}")

    def on_body(self, body: bytes) -> None:
        now, totals = self._now, self._totals
        self._tail = (self._tail + body)[-32:]
        events = (self._buf + body).split(b"\n\n")
        self._buf = events.pop()  # an incomplete event waits for the rest of it
        for event in events:
            found = _STAMP_RE.search(event)
            if found is None:
                continue
            totals.chunks += 1
            totals.delays_s.append((now - int(found.group(1))) / 1e9)
            if self._last:
                totals.gaps_s.append((now - self._last) / 1e9)
            else:
                totals.ttfc_s.append((now - self._sent) / 1e9)
            self._last = now

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status != 200:
            self.finish(f"http {status}")
        elif b"[DONE]" not in self._tail:
            self.finish("stream without [DONE]")
        else:
            self._totals.complete += 1
            self.finish("")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.finish("closed mid-stream" if exc is None else f"conn: {type(exc).__name__}")

    def abort(self) -> None:
        self.finish("timeout")

    def finish(self, error: str) -> None:
        if self._finished:
            return
        self._finished = True
        if error:
            self._totals.error(error)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._pending.discard(self)
        if not self._pending:
            self._done.set()


async def measure(
    port: int,
    model: str = "hint:fast",
    streams: int = 512,
    chunks: int = FULL_CHUNKS,
    interval_ms: float = SLOW_CHUNK_MS,
    host: str = "127.0.0.1",
) -> dict[str, Any]:
    """Open ``streams`` stamped streams of ``chunks`` chunks and measure every chunk's delay."""
    raise_fd_limit(streams * 4 + 256)
    loop = asyncio.get_running_loop()
    body = json.loads(chat_body(model, stream=True))
    body["max_tokens"] = chunks  # the --stamp mock sends this many content chunks
    request = build_request(host, port, "/v1/chat/completions", json.dumps(body).encode())
    totals = _Totals()
    done = asyncio.Event()
    pending: set[_Stream] = set()
    nominal_s = chunks * interval_ms / 1000.0
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a pause of ours would count as delay added by the target
    t0 = time.perf_counter()
    try:

        async def open_one(i: int) -> None:
            await asyncio.sleep(i * interval_ms / 1000.0 / streams)  # spread over one interval
            stream = _Stream(request, totals, done, pending)
            pending.add(stream)
            try:
                await asyncio.wait_for(loop.create_connection(lambda: stream, host, port), 10.0)
            except (OSError, TimeoutError) as exc:
                stream.finish(f"connect: {type(exc).__name__}")

        openers = [loop.create_task(open_one(i)) for i in range(streams)]
        await asyncio.gather(*openers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), nominal_s + GRACE_S)
        for stream in list(pending):
            stream.abort()
    finally:
        if gc_was_enabled:
            gc.enable()
    wall = time.perf_counter() - t0
    stalls = [g for g in totals.gaps_s if g * 1000.0 > STALL_MS]
    return {
        "concurrency": streams,
        "stream": True,
        "chunks_per_stream": chunks,
        "interval_ms": interval_ms,
        "duration_s": round(wall, 3),
        "issued": streams,
        "requests": totals.complete,
        "errors": sum(totals.errors.values()),
        "error_kinds": totals.errors,
        "rps": round(totals.complete / max(wall, 1e-9), 1),
        "chunks": totals.chunks,
        "chunks_expected": streams * chunks,
        "added_chunk_delay_ms": summarize(totals.delays_s),
        "chunk_gap_ms": summarize(totals.gaps_s),
        "ttfc_ms": summarize(totals.ttfc_s),
        "stalls": len(stalls),
        "stall_ms": STALL_MS,
        "max_gap_ms": round(max(totals.gaps_s) * 1000.0, 3) if totals.gaps_s else None,
    }


async def run_slow_streams(ctx: ScenarioRun) -> dict[str, Any]:
    """The ``slow512`` scenario's run (see ``bench/scenarios.py``)."""
    chunks = QUICK_CHUNKS if ctx.quick else FULL_CHUNKS
    return await measure(ctx.port, ctx.model, ctx.scenario.concurrency, chunks)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="slow concurrent streams: added delay per chunk (prints JSON)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="hint:fast")
    ap.add_argument("--streams", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=FULL_CHUNKS)
    ap.add_argument("--interval-ms", type=float, default=SLOW_CHUNK_MS, help="the mock's pacing")
    args = ap.parse_args(argv)
    result = uvloop.run(
        measure(args.port, args.model, args.streams, args.chunks, args.interval_ms, args.host)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
