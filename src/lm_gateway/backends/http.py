"""What every HTTP backend adapter shares: the pooled session, one POST with a deadline, and the
mapping of transport failures and upstream statuses to :class:`BackendError`.

The mapping tells the client what happened without blaming it for the gateway's problems: an
upstream 401/403 means the *gateway's* credential was refused, so the client gets a 502, not a 401
that would make it doubt its own key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway.backends.base import Backend, BackendError, ChatStream, ProbeResult, sse_error_event
from lm_gateway.config.schema import BackendConfig, Secret
from lm_gateway.http.client import close_session, new_session
from lm_gateway.http.deadline import deadline

if TYPE_CHECKING:
    import aiohttp

MAX_ERROR_BODY = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024


class HttpBackend(Backend):
    """Base for adapters that reach their upstream over HTTP with a pooled session."""

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        super().__init__(config, key)
        self._session: aiohttp.ClientSession | None = None
        self.timeout_s = config.timeout_ms / 1000
        self.connect_timeout_s = config.connect_timeout_ms / 1000

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(
                self.config.max_connections, self.connect_timeout_s, self.config.base_url
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await close_session(self._session)
            self._session = None

    def url(self, path: str) -> str:
        return self.config.base_url + path

    async def post_json(self, path: str, payload: bytes, headers: dict[str, str]) -> tuple[bytes, Any]:
        """POST and return the raw body and its parsed JSON, or raise a mapped :class:`BackendError`."""
        import aiohttp

        try:
            with deadline(self.timeout_s):
                async with self.session.post(
                    self.url(path), data=payload, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status >= 300:
                        body = await _read_bounded(resp, MAX_ERROR_BODY)
                        raise self.status_error(resp.status, body, resp.headers)
                    raw = await _read_bounded(resp, MAX_RESPONSE_BODY)
        except BackendError:
            raise
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from exc
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.bad_response("returned a body that is not valid JSON") from exc

    async def open_stream(self, path: str, payload: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Start a streamed POST; errors before the first body byte are raised as HTTP errors."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=self.timeout_s
        )
        try:
            resp = await self.session.post(
                self.url(path), data=payload, headers=headers, allow_redirects=False, timeout=timeout
            )
        except TimeoutError as exc:
            raise self.timeout_error() from exc
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from exc
        if resp.status >= 300:
            try:
                body = await _read_bounded(resp, MAX_ERROR_BODY)
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                resp.release()
            raise self.status_error(resp.status, body, resp.headers)
        return resp

    async def get_probe(self, path: str, timeout_s: float, headers: dict[str, str]) -> ProbeResult:
        """A GET that costs no tokens; 2xx means the upstream is up and accepts our credentials."""
        import aiohttp

        try:
            async with (
                asyncio.timeout(timeout_s),
                self.session.get(self.url(path), headers=headers, allow_redirects=False) as resp,
            ):
                body = await _read_bounded(resp, MAX_ERROR_BODY)
                if 200 <= resp.status < 300:
                    return ProbeResult(ok=True, models=_model_names(body))
                return ProbeResult(ok=False, detail=f"HTTP {resp.status} from {path}")
        except TimeoutError:
            return ProbeResult(ok=False, detail=f"no answer within {timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return ProbeResult(ok=False, detail=self.scrub(_describe_transport_error(exc)))

    # -- error mapping ---------------------------------------------------------------------------

    def timeout_error(self) -> BackendError:
        return BackendError(
            504,
            f"backend '{self.name}' did not answer within {self.timeout_s:g}s",
            code="backend_timeout",
            retryable=True,
        )

    def transport_error(self, exc: Exception) -> BackendError:
        return BackendError(
            502,
            f"backend '{self.name}' is unreachable: {self.scrub(_describe_transport_error(exc))}",
            code="backend_unreachable",
            retryable=True,
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


class SSERelay(ChatStream):
    """Relays an OpenAI SSE body byte for byte, noting usage and whether it ended properly.

    The bytes are not parsed: only a chunk that mentions ``"usage"`` is kept, and decoded once at the
    end. A stream that stops before ``data: [DONE]`` (connection cut, chunked body ended early) is
    finished with an error event, never silently truncated.
    """

    def __init__(self, backend: HttpBackend, resp: aiohttp.ClientResponse) -> None:
        self._backend = backend
        self._resp = resp
        self._usage_chunks: list[bytes] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        import aiohttp

        resp = self._resp
        content = resp.content
        tail = b""
        finished = False
        failure: BackendError | None = None
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                if b'"usage"' in chunk:
                    self._usage_chunks.append(chunk)
                tail = (tail + chunk)[-24:] if len(chunk) < 24 else chunk[-24:]
                yield chunk
            if b"[DONE]" not in tail:
                failure = self._backend.bad_response("ended the stream before [DONE]")
            finished = True
        except TimeoutError:
            failure = self._backend.timeout_error()
        except aiohttp.ClientError as exc:
            failure = self._backend.bad_response(f"broke off the stream: {_describe_transport_error(exc)}")
        finally:
            if finished:
                resp.release()
            else:
                resp.close()
        self._read_usage()
        if failure is not None:
            self.error = failure.message
            yield sse_error_event(failure.message, failure.code)

    def _read_usage(self) -> None:
        for line in b"".join(self._usage_chunks).splitlines():
            if not line.startswith(b"data:") or b'"usage"' not in line:
                continue
            try:
                usage = orjson.loads(line[5:]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(usage, dict):
                self.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
                self.completion_tokens = _int_or_none(usage.get("completion_tokens"))


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise BackendError(502, f"response larger than {limit} bytes", code="backend_response_too_large")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.readany()
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


def _describe_transport_error(exc: Exception) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed by the upstream"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut off"
    return type(exc).__name__


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
            return _int_or_none(usage.get("prompt_tokens")), _int_or_none(usage.get("completion_tokens"))
    return None, None
