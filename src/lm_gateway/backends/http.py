"""What every HTTP backend adapter shares: the pooled connection, one request with a deadline, stream
relays, and the mapping of transport failures and upstream statuses to :class:`BackendError`.

The mapping tells the client what happened without blaming it for the gateway's problems: an
upstream 401/403 means the *gateway's* credential was refused, so the client gets a 502, not a 401
that would make it doubt its own key.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from lm_gateway.backends.base import Backend, BackendError, ChatStream, ProbeResult, sse_error_event
from lm_gateway.config.schema import BackendConfig, Secret
from lm_gateway.http.deadline import deadline
from lm_gateway.http.proxy import proxy_for
from lm_gateway.http.transport import (
    ConnectError,
    PayloadError,
    Pool,
    Response,
    ServerDisconnected,
    TransportError,
)
from lm_gateway.protocols import MALFORMED, UpstreamStreamError, malformed

MAX_ERROR_BODY = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024


class HttpBackend(Backend):
    """Base for adapters that reach their upstream over HTTP, through one keep-alive :class:`Pool`
    per backend (built once; a reload that keeps the backend's settings keeps its connections)."""

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        super().__init__(config, key)
        self.timeout_s = config.timeout_ms / 1000
        self.connect_timeout_s = config.connect_timeout_ms / 1000
        self._pool: Pool | None = None
        self._unusable: str | None = None
        try:
            self._pool = Pool(
                config.base_url,
                max_connections=config.max_connections,
                connect_timeout=self.connect_timeout_s,
                proxy=proxy_for(config.base_url),
            )
        except ValueError as exc:  # e.g. an https:// or socks proxy in the environment
            self._unusable = str(exc)

    def prepare(self, headers: Mapping[str, str]) -> bytes:
        """Encode an adapter's fixed headers once; requests then reuse the bytes."""
        return self._pool.prepare_headers(headers) if self._pool is not None else b""

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise BackendError(
                502,
                f"backend '{self.name}' cannot be reached with this network setup: {self._unusable}",
                code="backend_unreachable",
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _send(self, method: str, path: str, headers: bytes, payload: bytes) -> Response:
        """Send and wait for the response head, within the backend's timeout."""
        try:
            with deadline(self.timeout_s):
                return await self.pool.request(method, path, headers, payload)
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except TransportError as exc:
            raise self.transport_error(exc) from exc

    async def post_json(self, path: str, payload: bytes, headers: bytes) -> tuple[bytes, Any]:
        """POST and return the raw body and its parsed JSON, or raise a mapped :class:`BackendError`."""
        try:
            with deadline(self.timeout_s):
                resp = await self.pool.request("POST", path, headers, payload)
                if resp.status >= 300:
                    raise self.status_error(
                        resp.status, await _read_bounded(resp, MAX_ERROR_BODY), resp.headers
                    )
                raw = await _read_bounded(resp, MAX_RESPONSE_BODY)
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except TransportError as exc:
            raise self.transport_error(exc) from exc
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.bad_response("returned a body that is not valid JSON") from exc

    async def open_stream(self, path: str, payload: bytes, headers: bytes) -> Response:
        """Start a streamed POST; errors before the first body byte are raised as HTTP errors."""
        resp = await self._send("POST", path, headers, payload)
        if resp.status >= 300:
            try:
                with deadline(self.timeout_s):
                    body = await _read_bounded(resp, MAX_ERROR_BODY)
            except (TimeoutError, TransportError, BackendError):
                body = b""
            resp.release()
            raise self.status_error(resp.status, body, resp.headers)
        return resp

    async def get_probe(self, path: str, timeout_s: float, headers: bytes) -> ProbeResult:
        """A GET that costs no tokens; 2xx means the upstream is up and accepts our credentials."""
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self.pool.request("GET", path, headers)
                body = await _read_bounded(resp, MAX_ERROR_BODY)
        except TimeoutError:
            return ProbeResult(ok=False, detail=f"no answer within {timeout_s:g}s")
        except TransportError as exc:
            return ProbeResult(ok=False, detail=self.scrub(exc.message))
        except BackendError as exc:
            return ProbeResult(ok=False, detail=exc.message)
        if 200 <= resp.status < 300:
            return ProbeResult(ok=True, models=_model_names(body))
        return ProbeResult(ok=False, detail=f"HTTP {resp.status} from {path}")

    # -- error mapping ---------------------------------------------------------------------------

    def timeout_error(self) -> BackendError:
        return BackendError(
            504,
            f"backend '{self.name}' did not answer within {self.timeout_s:g}s",
            code="backend_timeout",
            retryable=True,
        )

    def transport_error(self, exc: TransportError) -> BackendError:
        if isinstance(exc, PayloadError):
            return self.bad_response(f"sent an invalid HTTP response: {self.scrub(exc.message)}")
        what = "is unreachable" if isinstance(exc, ConnectError) else "closed the connection"
        return BackendError(
            502,
            f"backend '{self.name}' {what}: {self.scrub(exc.message)}",
            code="backend_unreachable",
            retryable=isinstance(exc, ConnectError)
            or (isinstance(exc, ServerDisconnected) and not exc.got_bytes),
        )

    def bad_response(self, what: str) -> BackendError:
        return BackendError(502, f"backend '{self.name}' {what}", code="backend_bad_response", retryable=True)

    def status_error(self, status: int, body: bytes, headers: Any) -> BackendError:
        detail = self.scrub(_upstream_message(body))
        where = f"backend '{self.name}' answered HTTP {status}"
        text = f"{where}: {detail}" if detail else where
        retry_after = headers.get("Retry-After") if headers is not None else None
        if status in (401, 403):
            return BackendError(
                502, f"{where}: the gateway's credential for it was refused", code="backend_auth"
            )
        if status == 429:
            return BackendError(
                429, text, code="backend_rate_limited", retryable=True, retry_after=retry_after
            )
        if status in (408, 504):
            return BackendError(504, text, code="backend_timeout", retryable=True)
        if status >= 500:
            return BackendError(
                503 if status in (503, 529) else 502,
                text,
                code=f"backend_http_{status}",
                retryable=True,
                retry_after=retry_after,
            )
        if status == 404:
            return BackendError(502, text, code="backend_not_found")
        if 300 <= status < 400:
            return BackendError(502, f"{where} (redirects are not followed)", code="backend_redirect")
        return BackendError(status, text, code=f"backend_http_{status}", type_="invalid_request_error")


@dataclass(frozen=True, slots=True)
class RelayFormat:
    """What a same-protocol relay needs to know about a stream format, without parsing every byte:
    whether a stream's last bytes are its proper end, how to read usage from the bytes kept (the last
    :data:`RELAY_WINDOW` bytes, plus the first ``head_bytes`` for formats that report input tokens at
    the start, as Anthropic's ``message_start`` does), and how to say "this stream failed" in that
    format."""

    name: str
    ends_properly: Callable[[bytes], bool]
    read_usage: Callable[[bytes], tuple[int | None, int | None]]
    usage_marker: bytes
    error_frame: Callable[[str, str], bytes]
    head_bytes: int = 0
    event_end: bytes = b"\n\n"  # what ends an event (SSE); a line break for line-delimited JSON


RELAY_WINDOW = 4096
"""Bytes of a relayed stream's end kept for its end check and usage: every format reports its final
counts in its last event or line, and reading them there needs no per-chunk parsing or searching (a
search would miss a marker split across network reads)."""


def last_line(tail: bytes) -> bytes:
    """The last non-blank line of ``tail`` (SSE or NDJSON), without its line ending."""
    stripped = tail.rstrip()
    return stripped[stripped.rfind(b"\n") + 1 :].strip()


def last_json(tail: bytes) -> Any:
    """The JSON value on the last line of ``tail`` (an SSE ``data:`` prefix removed), or None."""
    line = last_line(tail)
    try:
        return orjson.loads(line[5:] if line.startswith(b"data:") else line)
    except orjson.JSONDecodeError:
        return None


def in_band_error(tail: bytes) -> str | None:
    """The message of an error the upstream itself ended its stream with, in any of the three formats
    (OpenAI ``data: {"error": ...}``, Anthropic ``event: error``, Ollama ``{"error": ...}``)."""
    payload = last_json(tail)
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "error")
    return str(error) if error else None


def _openai_usage(kept: bytes) -> tuple[int | None, int | None]:
    """The last usage the stream reported (searched from the end: it is in one of the last events)."""
    for line in reversed(kept.splitlines()):
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                counts = usage_from(orjson.loads(line[5:]))
            except orjson.JSONDecodeError:
                continue
            if counts != (None, None):
                return counts
    return None, None


OPENAI_SSE = RelayFormat(
    name="openai",
    ends_properly=lambda tail: last_line(tail).endswith(b"[DONE]"),
    read_usage=_openai_usage,
    usage_marker=b'"usage"',
    error_frame=lambda message, code: sse_error_event(message, code),
)


class RawRelay(ChatStream):
    """Relays a stream byte for byte, noting usage and whether it ended properly.

    The bytes are not parsed while they flow: the relay only keeps the stream's last few KB (and its
    first ``head_bytes``), read once at the end. A stream that stops before its format's proper end
    (connection cut, chunked body ended early) is finished with that format's error frame, never
    silently truncated; one the upstream ended with its own error event is already finished, so only
    the error is noted.
    """

    def __init__(self, backend: HttpBackend, resp: Response, fmt: RelayFormat = OPENAI_SSE) -> None:
        self._backend = backend
        self._resp = resp
        self._format = fmt

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        fmt = self._format
        backend = self._backend
        head_left = fmt.head_bytes
        head = b""
        window = bytearray()
        trimmed = False
        upstream_error: str | None = None
        resp = self._resp
        pending = b""  # the start of a line the upstream has not finished: never relayed half
        async with _upstream_body(backend, resp) as outcome:
            while chunk := await outcome.read():
                if head_left:
                    head += chunk[:head_left]
                    head_left = max(0, head_left - len(chunk))
                window += chunk
                if len(window) > 2 * RELAY_WINDOW:
                    del window[:-RELAY_WINDOW]
                    trimmed = True
                if resp.complete and not resp.buffered:
                    self.upstream_done = True
                if pending:
                    chunk, pending = pending + chunk, b""
                if chunk[-1] not in _LINE_BREAKS:  # (reads mostly end with a line: one test)
                    cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
                    chunk, pending = chunk[:cut], chunk[cut:]
                    if not chunk:
                        continue
                yield chunk
            tail = bytes(window)
            if not fmt.ends_properly(tail):
                upstream_error = in_band_error(tail)
                if upstream_error is None:
                    outcome.failure = backend.bad_response(
                        f"ended the {fmt.name} stream before its end marker"
                    )
                elif pending:  # the upstream's own error event, left unfinished: finish it
                    yield pending + fmt.event_end
            elif pending:  # a proper end the upstream did not break its line after
                yield pending
        # The head matters only when the window lost the start; its cut last line is left out.
        kept = (head[: head.rfind(b"\n") + 1] if trimmed else b"") + bytes(window)
        if fmt.usage_marker in kept:  # most streams carry no usage unless asked: skip the line scan
            self.prompt_tokens, self.completion_tokens = fmt.read_usage(kept)
        if upstream_error is not None:
            self.error = f"backend '{backend.name}' failed mid-stream: {backend.scrub(upstream_error)}"
        elif outcome.failure is not None:
            self.error = outcome.failure.message
            # A cut line was dropped; an event left open by the cut is closed before the error's.
            relayed = window[: max(0, len(window) - len(pending))]
            gap = b"\n" if fmt.event_end == b"\n\n" and not relayed.endswith(b"\n\n") else b""
            yield gap + fmt.error_frame(outcome.failure.message, outcome.failure.code)


_LINE_BREAKS = b"\n\r"


class StreamTranslator(Protocol):
    """A backend-direction stream translator (``lm_gateway.protocols``), as :class:`TranslatedStream`
    uses it: the upstream's bytes in, OpenAI SSE frames out (appended to ``out``); ``usage`` once
    the stream reported it."""

    usage: dict[str, Any] | None

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None: ...

    def finish_bytes(self, out: list[bytes]) -> None: ...


class TranslatedStream(ChatStream):
    """Turns an upstream stream in another format into OpenAI SSE, as it arrives.

    What one network read gives goes out as one write; the read that completes the body goes out
    with the stream's end. The usage-only chunk reaches the client only when it asked for it (the
    translator's ``include_usage``); the traffic log has the token counts either way.
    """

    def __init__(self, backend: HttpBackend, resp: Response, translator: StreamTranslator) -> None:
        self._backend = backend
        self._resp = resp
        self._translator = translator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        translator, resp = self._translator, self._resp
        # What the current network read was translated to; on a failure it still goes out (before
        # the error event): the upstream delivered it, often in the same read as its error line.
        pending: list[bytes] = []
        try:
            async with _upstream_body(self._backend, resp) as outcome:
                try:
                    while chunk := await outcome.read():
                        translator.feed_bytes(chunk, pending)
                        if resp.complete and not resp.buffered:
                            self.upstream_done = True
                            continue  # the next read is the end, at once: one write for both
                        out, pending = b"".join(pending), []
                        if out:
                            yield out
                    translator.finish_bytes(pending)
                    pending.append(b"data: [DONE]\n\n")
                    out, pending = b"".join(pending), []
                    yield out
                except UpstreamStreamError as exc:
                    outcome.failure = BackendError(
                        502,
                        f"backend '{self._backend.name}' failed mid-stream: "
                        f"{self._backend.scrub(exc.message)}",
                        code="backend_stream_error",
                    )
                except MALFORMED as exc:
                    outcome.failure = self._backend.bad_response(f"sent a malformed stream: {malformed(exc)}")
            if outcome.failure is not None:
                self.error = outcome.failure.message
                yield b"".join(pending) + sse_error_event(outcome.failure.message, outcome.failure.code)
        finally:
            if translator.usage is not None:
                self.prompt_tokens, self.completion_tokens = usage_counts(translator.usage)


class _BodyOutcome:
    """The state of one streamed body being read: how it ended, and a read that times out only while
    it waits for the upstream (not while the client is slow to take what was already read)."""

    __slots__ = ("_idle_s", "_resp", "failure", "watch")

    def __init__(self, resp: Response, idle_s: float) -> None:
        self._resp = resp
        self._idle_s = idle_s
        self.failure: BackendError | None = None
        self.watch: Any = None

    async def read(self) -> bytes:
        self.watch.arm(self._idle_s)
        chunk = await self._resp.readany()
        self.watch.disarm()
        return chunk


@asynccontextmanager
async def _upstream_body(backend: HttpBackend, resp: Response) -> AsyncIterator[_BodyOutcome]:
    """Reading a streamed body: maps transport failures and idle timeouts, and always gives the
    connection back (kept alive after a clean end, closed after anything else, including the client
    going away)."""
    outcome = _BodyOutcome(resp, backend.timeout_s)
    clean = False
    try:
        with deadline(math.inf) as watch:
            outcome.watch = watch
            yield outcome
        clean = outcome.failure is None
    except TimeoutError:
        outcome.failure = backend.timeout_error()
    except TransportError as exc:
        outcome.failure = backend.bad_response(f"broke off the stream: {backend.scrub(exc.message)}")
    finally:
        if clean:
            resp.release()
        else:
            resp.close()


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _read_bounded(resp: Response, limit: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BackendError(502, f"response larger than {limit} bytes", code="backend_response_too_large")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BackendError(502, f"response larger than {limit} bytes", code="backend_response_too_large")
        parts.append(chunk)
    return b"".join(parts)


def _upstream_message(body: bytes) -> str:
    """The upstream's own error text, from an OpenAI/Anthropic/Ollama error body or the raw text."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] if text and not text.lstrip().startswith("<") else ""
    message: Any = payload
    if isinstance(payload, dict):
        message = payload.get("error", payload.get("message", ""))
        if isinstance(message, dict):
            message = message.get("message", "")
    return str(message)[:500] if message else ""


def _model_names(body: bytes) -> list[str] | None:
    """Model ids from an OpenAI ``/v1/models`` or Ollama ``/api/tags`` listing, if the body is one."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    items = payload.get("data", payload.get("models"))
    if not isinstance(items, list):
        return None
    names = [str(item.get("id") or item.get("name")) for item in items if isinstance(item, dict)]
    return names


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_from(payload: Any) -> tuple[int | None, int | None]:
    if isinstance(payload, dict):
        usage = payload.get("usage")
        if isinstance(usage, dict):
            return usage_counts(usage)
    return None, None


def usage_counts(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of an OpenAI ``usage`` object."""
    return _int_or_none(usage.get("prompt_tokens")), _int_or_none(usage.get("completion_tokens"))
