"""Machinery shared by the three fake backends: the server, request recording, the script queue and the
one byte writer every response goes through.

A fake is an ``aiohttp.web`` app on 127.0.0.1, port 0. Subclasses only declare :class:`Route` objects:
which path, which *renderer* turns a :class:`~tests.fakes.script.Reply` into bytes in that protocol,
and which :class:`Dialect` spells that protocol's errors. Everything that can go wrong on the wire
(cuts, drips, hangs, split writes, CRLF, invalid UTF-8) is implemented once, here, in
:meth:`FakeBackend._deliver`, so the three fakes misbehave identically.

Thread model: a fake runs either in the test's own event loop (``async with fake:``) or in a
background thread with its own loop (``with fake:``, via :class:`~tests.fakes.threaded.ServerThread`)
so sync clients such as the ``openai`` SDK can call it. Recording and scripting state is guarded by a
lock, so a test can script and inspect from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, Self

import orjson
from aiohttp import web

from .script import (
    HTML,
    INVALID_UTF8_MARKER,
    STOP,
    TOOL_CALLS,
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
    StreamError,
    Usage,
    count_tokens,
    echo_text,
    ticks,
)

if TYPE_CHECKING:
    from .threaded import ServerThread

# --------------------------------------------------------------------------------------------------
# Wire options and records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wire:
    """How bytes go out, to exercise the gateway's parsers rather than just its happy path.

    ``split_every=n`` writes every event (and every plain body) in ``n``-byte pieces, each flushed on
    its own and followed by ``split_pause`` seconds, so boundaries fall inside SSE lines, JSON and
    multi-byte UTF-8 characters. ``crlf`` ends SSE / NDJSON lines with ``\\r\\n``.
    """

    crlf: bool = False
    split_every: int | None = None
    split_pause: float = 0.001

    @property
    def eol(self) -> str:
        return "\r\n" if self.crlf else "\n"


class Outcome(StrEnum):
    """How a recorded request ended, from the fake's side of the socket."""

    PENDING = "pending"
    OK = "ok"
    """The whole response was sent, whatever its HTTP status."""
    DISCONNECTED = "disconnected"
    """The client went away (request task cancelled, or a write to the socket failed)."""
    CUT = "cut"
    """The fake closed the connection on purpose (:class:`CutStream`)."""
    DROPPED = "dropped"
    """The fake closed the connection without answering (:class:`Drop`)."""
    STOPPED = "stopped"
    """Still running when the fake was stopped."""


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake received it. ``headers`` keys are lower-case."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    """The parsed JSON body, or ``None`` when the body is empty or not JSON."""
    peer: str
    """Client ``host:port``: requests sharing a peer came over the same (keep-alive) connection."""
    outcome: Outcome = Outcome.PENDING

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def model(self) -> str | None:
        return self.json.get("model") if isinstance(self.json, dict) else None

    @property
    def api_key(self) -> str | None:
        """The credential the client presented: ``x-api-key`` or the ``Authorization: Bearer`` token."""
        if key := self.header("x-api-key"):
            return key
        auth = self.header("authorization") or ""
        return auth[7:] if auth.lower().startswith("bearer ") else None


# --------------------------------------------------------------------------------------------------
# What protocols plug in
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """A rendered response. A streaming one is ``frames`` (one SSE event / NDJSON line each, possibly
    endless) then ``tail`` (the terminator: ``[DONE]``, ``message_stop``, the ``done`` line), which cuts
    and in-stream errors suppress; ``tail`` may be a generator, read only after ``frames`` ran out, so it
    can report usage for what was actually streamed. A non-streaming one is the single frame of its
    body."""

    frames: Iterable[bytes]
    content_type: str = "application/json"
    streaming: bool = False
    tail: Iterable[bytes] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class Dialect(Protocol):
    """How one protocol spells errors and decides whether a request streams."""

    def error_body(self, status: int, message: str, error_type: str) -> bytes: ...

    def stream_error_frame(self, message: str, error_type: str, wire: Wire) -> bytes: ...

    def wants_stream(self, body: Mapping[str, Any]) -> bool: ...


Renderer = Callable[["Call", Reply], Output]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint of a fake. ``model_call`` routes take behaviours from the general script queue;
    other routes (model lists, version, health) only take behaviours scripted for their exact path,
    so a gateway health probe never eats a test's scripted failure."""

    method: str
    path: str
    render: Renderer
    dialect: Dialect
    model_call: bool = True


@dataclass(frozen=True, slots=True)
class Call:
    """What a renderer gets: the recorded request plus helpers every protocol needs."""

    request: RecordedRequest
    backend: FakeBackend
    route: Route
    http: web.Request

    @property
    def body(self) -> dict[str, Any]:
        return self.request.json if isinstance(self.request.json, dict) else {}

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) and model else self.backend.models[0]

    @property
    def wire(self) -> Wire:
        return self.backend.wire

    @property
    def streaming(self) -> bool:
        return self.route.dialect.wants_stream(self.body)

    @property
    def echo(self) -> str:
        return echo_text(last_user_text(self.body))

    @property
    def input_tokens(self) -> int:
        return count_tokens(request_text(self.body))

    def ident(self, prefix: str) -> str:
        """A deterministic, per-request unique id (``chatcmpl-fake-3``)."""
        return f"{prefix}fake-{self.request.seq}"


# --------------------------------------------------------------------------------------------------
# Protocol-neutral helpers used by the renderers
# --------------------------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """JSON as the real services send it: compact, non-ASCII as raw UTF-8 (not ``\\u`` escapes), so
    multi-byte characters really cross write boundaries when the stream is split."""
    return orjson.dumps(obj)


def sse(data: Any, wire: Wire, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` line optional, ``data:`` line, blank line)."""
    eol = wire.eol
    payload = data if isinstance(data, str) else dumps(data).decode()
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {payload}{eol}{eol}".encode()


def ndjson(obj: Any, wire: Wire) -> bytes:
    """One newline-delimited JSON line."""
    return dumps(obj) + wire.eol.encode()


def text_of(content: Any) -> str:
    """Text of a message ``content`` in any of the three shapes: a string, a list of parts/blocks with
    ``text`` (OpenAI parts, Anthropic blocks), or one such part."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, list):
        return " ".join(t for t in (text_of(part) for part in content) if t)
    return ""


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text the default answer echoes: the last user message, else the prompt, else the input."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return text_of(message.get("content"))
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, list) and value:
            value = value[-1]
        if isinstance(value, str):
            return value
    return ""


def request_text(body: Mapping[str, Any]) -> str:
    """All prompt text of a request (system, messages, prompt, input), for input token counts."""
    parts = [text_of(body.get("system"))]
    messages = body.get("messages")
    if isinstance(messages, list):
        parts += [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    for key in ("prompt", "input"):
        value = body.get(key)
        parts += [text_of(v) for v in value] if isinstance(value, list) else [text_of(value)]
    return " ".join(p for p in parts if p)


def finish_reason(reply: Reply) -> str:
    """The neutral finish reason: the scripted one, else ``tool_calls`` when calling tools, else ``stop``."""
    if reply.finish_reason:
        return reply.finish_reason
    return TOOL_CALLS if reply.tool_calls else STOP


def usage_for(call: Call, reply: Reply, text: str, thinking: str | None = None) -> Usage:
    """The scripted usage, else counted: request words in, answer + thinking words out."""
    if reply.usage is not None:
        return reply.usage
    return Usage(call.input_tokens, count_tokens(text) + count_tokens(thinking or ""))


def now_iso() -> str:
    """An RFC 3339 UTC timestamp, as Ollama's ``created_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def embedding(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit-ish vector derived from the text (same text, same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i] - 127.5) / 127.5, 6) for i in range(dims)]


def embedding_base64(vector: Sequence[float]) -> str:
    """The ``encoding_format: "base64"`` form: little-endian float32, base64 (the OpenAI SDK's default)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def http_reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# Error ``type`` per status; Anthropic's vocabulary, which OpenAI-style bodies reuse.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


# --------------------------------------------------------------------------------------------------
# Delivery plan
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Delivery:
    """How the writer paces and damages an answer (derived from the scripted behaviour)."""

    delay: float = 0.0
    cut_after: int | None = None
    cut_mid_event: bool = False
    error_after: int | None = None
    error: StreamError | None = None
    piece_size: int | None = None
    pause: float = 0.0
    patch: tuple[bytes, bytes] | None = None


def _plan(behaviour: Behaviour, wire: Wire) -> tuple[Reply, _Delivery]:
    """Split an answer-family behaviour into the reply to render and how to deliver it."""
    split = _Delivery(piece_size=wire.split_every, pause=wire.split_pause if wire.split_every else 0.0)
    match behaviour:
        case Reply():
            return behaviour, replace(split, delay=behaviour.delay)
        case CutStream(after=after, reply=reply, mid_event=mid_event):
            reply = reply or Reply()
            return reply, replace(split, delay=reply.delay, cut_after=after, cut_mid_event=mid_event)
        case StreamError(after=after, reply=reply):
            reply = reply or Reply()
            return reply, replace(split, delay=reply.delay, error_after=after, error=behaviour)
        case Slow(interval=interval, size=size, reply=reply):
            reply = reply or Reply()
            return reply, _Delivery(delay=reply.delay, piece_size=size, pause=interval)
        case NeverEndingStream(interval=interval, text=text):
            return Reply(text="", chunks=ticks(text), delay=interval), replace(split, delay=interval)
        case InvalidUTF8(text=text, payload=payload):
            return Reply(text=text), replace(split, patch=(INVALID_UTF8_MARKER.encode(), payload))
    raise TypeError(f"not an answer behaviour: {behaviour!r}")


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeBackend:
    """Base of the fakes: an aiohttp app that records, follows its script, and writes responses.

    Constructor arguments shared by every fake:

    * ``name`` - shows in the ``x-fake-backend`` response header (tests with several fakes);
    * ``models`` - what the model-list endpoints report; ``models[0]`` answers requests naming none;
    * ``api_key`` - when set, requests must present exactly this key (else the protocol's 401);
    * ``wire`` - :class:`Wire` options (CRLF, split writes) applied to every response;
    * ``default`` - the behaviour for model calls when nothing is scripted (``Reply()`` = echo).
    """

    kind = "fake"
    default_models: Sequence[str] = ("fake-model",)

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
        wire: Wire | None = None,
        default: Behaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name or self.kind
        self.models: Sequence[str] = tuple(models or self.default_models)
        self.api_key = api_key
        self.wire = wire or Wire()
        self.host = host
        self._requested_port = port
        self._state = threading.Condition(threading.RLock())
        self._initial_default: Behaviour = default or Reply()
        self._default = self._initial_default
        self._path_defaults: dict[str, Behaviour] = {}
        self._queue: deque[Behaviour] = deque()
        self._path_queues: dict[str, deque[Behaviour]] = {}
        self._records: list[RecordedRequest] = []
        self._seq = itertools.count(1)
        self._connections = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._port: int | None = None
        self._thread: ServerThread | None = None

    # -- to override ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The endpoints this fake serves."""
        raise NotImplementedError

    @property
    def fallback_dialect(self) -> Dialect:
        """Dialect for unknown paths (recorded, answered 404)."""
        return self.routes()[0].dialect

    def check_request(self, call: Call) -> Status | None:
        """Reject a request before any script is consumed (auth, required headers). Default: when
        ``api_key`` is set, the client must present it (Bearer or ``x-api-key``)."""
        if self.api_key is not None and call.request.api_key != self.api_key:
            return Status(401, message="invalid api key")
        return None

    # -- scripting --------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour, path: str | None = None) -> Self:
        """Queue behaviours for the next model calls (or, with ``path``, the next calls to that exact
        path, which take precedence). FIFO; the default answers once the queue is empty."""
        with self._state:
            queue = self._queue if path is None else self._path_queues.setdefault(path, deque())
            queue.extend(behaviours)
        return self

    def set_default(self, behaviour: Behaviour, *, path: str | None = None) -> Self:
        """What to do when nothing is queued: for all model calls, or for one path."""
        with self._state:
            if path is None:
                self._default = behaviour
            else:
                self._path_defaults[path] = behaviour
        return self

    def pending(self, path: str | None = None) -> int:
        """How many scripted behaviours are still unused (assert 0 to prove they were all consumed)."""
        with self._state:
            queue = self._queue if path is None else self._path_queues.get(path, ())
            return len(queue)

    def reset(self) -> None:
        """Forget recordings, scripts and defaults set since construction (to reuse one fake across
        tests); request ids keep counting up so they stay unique."""
        with self._state:
            self._queue.clear()
            self._path_queues.clear()
            self._path_defaults.clear()
            self._default = self._initial_default
            self._records.clear()
            self._connections = 0

    def _default_for(self, route: Route) -> Behaviour:
        with self._state:
            return self._path_defaults.get(route.path) or (self._default if route.model_call else Reply())

    def _next_behaviour(self, route: Route, path: str) -> Behaviour:
        with self._state:
            if queue := self._path_queues.get(path):
                return queue.popleft()
            if path in self._path_defaults:
                return self._path_defaults[path]
            if route.model_call:
                return self._queue.popleft() if self._queue else self._default
            return Reply()

    # -- what was received ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a snapshot)."""
        with self._state:
            return list(self._records)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def last_request(self) -> RecordedRequest:
        records = self.requests
        assert records, f"{self.name} received no request"
        return records[-1]

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted (compare with ``len(requests)`` to check keep-alive reuse)."""
        with self._state:
            return self._connections

    @property
    def disconnected(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.outcome is Outcome.DISCONNECTED]

    @property
    def disconnects(self) -> int:
        """Requests the client abandoned before the fake finished answering."""
        return len(self.disconnected)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` holds (re-checked whenever a request arrives or ends). For sync
        tests; a disconnect is only noticed a moment after the client closes, so wait for it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("wait_until would block the running event loop: use wait_until_async")
        with self._state:
            if not self._state.wait_for(predicate, timeout):
                raise TimeoutError(f"{self.name}: condition not met within {timeout}s")

    async def wait_until_async(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Async twin of :meth:`wait_until` (polls, so it works whichever loop the fake runs in)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: condition not met within {timeout}s")
            await asyncio.sleep(0.01)

    def _set_outcome(self, record: RecordedRequest, outcome: Outcome) -> None:
        with self._state:
            if record.outcome is Outcome.PENDING:
                record.outcome = outcome
            self._state.notify_all()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._port is not None, f"{self.name} is not started"
        return self._port

    @property
    def url(self) -> str:
        """Root URL, no trailing slash (``http://127.0.0.1:PORT``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an SDK's ``base_url`` should be (overridden where the protocol wants ``/v1``)."""
        return self.url

    async def start(self) -> None:
        """Bind and listen (in the running loop); returns once the socket accepts connections."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for route in self.routes():
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_route("*", "/{tail:.*}", self._handler(None))
        # handler_cancellation: a client disconnect cancels the handler, which is how a hanging or
        # sleeping handler notices it (and how ``disconnects`` gets counted).
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        http = self._runner.server
        assert http is not None

        def accept() -> asyncio.Protocol:
            with self._state:
                self._connections += 1
                self._state.notify_all()
            return http()

        loop = asyncio.get_running_loop()
        self._stopping = False
        self._server = await loop.create_server(accept, self.host, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, end in-flight handlers (recorded as ``stopped``) and close connections."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run in a background thread with its own loop (for sync clients)."""
        from .threaded import ServerThread

        self._thread = ServerThread(self, name=f"fake-{self.name}").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    # -- serving ----------------------------------------------------------------------------------

    def _handler(self, route: Route | None) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, route)

        return handle

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = RecordedRequest(
            seq=next(self._seq),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            peer=f"{peer[0]}:{peer[1]}" if peer else "?",
        )
        with self._state:
            self._records.append(record)
            self._state.notify_all()
        return record

    async def _serve(self, request: web.Request, route: Route | None) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        record = await self._record(request)
        if route is None:  # unknown path: recorded, then the protocol's 404
            route = Route(request.method, request.path, _not_found, self.fallback_dialect, model_call=False)
        call = Call(record, self, route, request)
        try:
            behaviour: Behaviour = self.check_request(call) or self._next_behaviour(route, request.path)
            return await self._perform(call, behaviour)
        except asyncio.CancelledError:
            self._set_outcome(record, Outcome.STOPPED if self._stopping else Outcome.DISCONNECTED)
            raise
        finally:
            self._inflight.discard(task)

    async def _perform(self, call: Call, behaviour: Behaviour) -> web.StreamResponse:
        while isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            behaviour = behaviour.then or self._default_for(call.route)
        dialect = call.route.dialect
        plain = _Delivery(piece_size=self.wire.split_every, pause=self.wire.split_pause)
        match behaviour:
            case Status(status=status, body=body, headers=headers, message=message):
                if body is None:
                    raw = dialect.error_body(status, message or http_reason(status), error_type_for(status))
                    ctype = "application/json"
                elif isinstance(body, Mapping):
                    raw, ctype = dumps(body), "application/json"
                else:
                    raw = body.encode() if isinstance(body, str) else body
                    ctype = "text/plain"
                return await self._deliver(call, Output([raw], ctype, status=status, headers=headers), plain)
            case Garbage(body=body, status=status, content_type=ctype):
                return await self._deliver(call, Output([body], ctype, status=status), plain)
            case HTML(status=status, body=body):
                return await self._deliver(call, Output([body], "text/html", status=status), plain)
            case EmptyBody(status=status):
                return await self._deliver(call, Output([b""], status=status), plain)
            case Drop():
                self._set_outcome(call.request, Outcome.DROPPED)
                if call.http.transport is not None:
                    call.http.transport.close()
                return web.Response()
            case StreamError() if not call.streaming:
                error = dialect.error_body(behaviour.status, behaviour.message, behaviour.error_type)
                return await self._deliver(call, Output([error], status=behaviour.status), plain)
            case NeverEndingStream(interval=interval) if not call.streaming:
                # Headers, then a JSON body that never completes (leading whitespace is valid JSON).
                endless = Output(itertools.repeat(b" "), streaming=True)
                return await self._deliver(call, endless, _Delivery(delay=interval))
        reply, delivery = _plan(behaviour, self.wire)
        return await self._deliver(call, call.route.render(call, reply), delivery)

    async def _deliver(self, call: Call, output: Output, how: _Delivery) -> web.StreamResponse:
        """The only place response bytes are written."""
        resp = web.StreamResponse(status=output.status, headers={"x-fake-backend": self.name})
        resp.headers.update(output.headers)
        resp.content_type = output.content_type

        def patched(data: bytes) -> bytes:
            return data.replace(*how.patch) if how.patch else data

        async def write(data: bytes) -> None:
            size = how.piece_size
            if not size:
                await resp.write(data)
                return
            for start in range(0, len(data), size):
                await resp.write(data[start : start + size])
                if how.pause:
                    await asyncio.sleep(how.pause)

        try:
            if not output.streaming:
                body = patched(b"".join(output.frames))
                resp.content_length = len(body)
                await resp.prepare(call.http)
                if how.cut_after is not None:
                    await write(body[: len(body) // 2])
                    return self._cut(call, resp)
                await write(body)
            else:
                await resp.prepare(call.http)
                frames: Iterator[bytes] = iter(output.frames)
                for index, frame in enumerate(itertools.chain(frames, [None])):
                    if frame is None:  # end of the body frames: the terminator, unless damaged
                        if how.cut_after is not None:
                            return self._cut(call, resp)
                        if how.error is not None:
                            await write(self._error_frame(call, how.error))
                            break
                        for tail in output.tail:
                            if how.delay:
                                await asyncio.sleep(how.delay)
                            await write(tail)
                        break
                    if how.cut_after is not None and index >= how.cut_after:
                        if how.cut_mid_event:
                            await write(frame[: len(frame) // 2])
                        return self._cut(call, resp)
                    if how.error is not None and how.error_after is not None and index >= how.error_after:
                        await write(self._error_frame(call, how.error))
                        break
                    if index and how.delay:
                        await asyncio.sleep(how.delay)
                    await write(patched(frame))
            await resp.write_eof()
        except ConnectionError:
            self._set_outcome(call.request, Outcome.DISCONNECTED)
            return resp
        self._set_outcome(call.request, Outcome.OK)
        return resp

    def _error_frame(self, call: Call, error: StreamError) -> bytes:
        return call.route.dialect.stream_error_frame(error.message, error.error_type, self.wire)

    def _cut(self, call: Call, resp: web.StreamResponse) -> web.StreamResponse:
        """Close the socket mid-body: buffered bytes are flushed, then FIN, with no final chunk."""
        self._set_outcome(call.request, Outcome.CUT)
        if call.http.transport is not None:
            call.http.transport.close()
        return resp


def _not_found(call: Call, reply: Reply) -> Output:
    message = f"{call.request.method} {call.request.path} is not served by this fake"
    return Output([call.route.dialect.error_body(404, message, "not_found_error")], status=404)


__all__ = [
    "Call",
    "Dialect",
    "FakeBackend",
    "Outcome",
    "Output",
    "RecordedRequest",
    "Route",
    "Wire",
]
