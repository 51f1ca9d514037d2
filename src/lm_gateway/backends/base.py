"""The interface every backend adapter implements, and the errors they raise.

The router calls backends only through :class:`Backend`: ``chat`` for a whole answer, ``chat_stream``
for a stream of OpenAI SSE bytes, ``probe`` for a health check that costs no tokens. Adapters for
other wire formats (Anthropic, Ollama native) translate with ``lm_gateway.protocols`` inside the same
interface, so nothing above this layer knows which protocol an upstream speaks.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from lm_gateway.config.schema import BackendConfig, Secret, TierConfig


class BackendError(Exception):
    """A failed upstream call, already mapped to what the client should see.

    ``status`` is the HTTP status for the client, ``code`` a stable machine-readable reason, and the
    message names the backend but never a credential. ``retryable`` tells the router whether another
    attempt (or tier) may succeed: connection failures, timeouts, 429 and 5xx are; other 4xx are not.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type_: str = "upstream_error",
        retryable: bool = False,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(slots=True)
class Completion:
    """A whole answer: the OpenAI-shaped JSON body to send, plus the usage read from it."""

    body: bytes
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatStream(abc.ABC):
    """A stream of OpenAI SSE bytes, relayed as they arrive.

    Iterating it yields byte chunks ready to write to the client. A failure after the first byte is
    not raised: it ends the stream with an SSE error event and is recorded in ``error``, so that the
    client is told and the traffic log sees it. Closing the iterator early (client gone) cancels the
    upstream request.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    upstream_done = False
    """True once the upstream body has wholly arrived: what the iterator still yields then comes
    without waiting, so a consumer re-encoding the stream can write it out with its own end, at once
    (one write instead of two)."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    detail: str | None = None
    models: list[str] | None = None


MIN_ANSWER_SCRUBBED_KEY = 16
"""Answers are scrubbed of a backend's key only when it is at least this long. Shorter ones are the
placeholders local servers take (``ollama``, ``EMPTY``, ``lm-studio``): scrubbing those would turn
every mention of the word in an answer into ``***``, while real provider keys are 30 to 200
characters. The errors the gateway words itself (an upstream's status, a broken stream) are scrubbed
of every key, whatever its length (:meth:`Backend.scrub`): that is where upstreams echo keys, and an
error's wording loses nothing that matters. (An error event relayed byte for byte, as part of a
passthrough stream, is part of the answer.)"""


class Backend(abc.ABC):
    """One configured upstream. Instances live as long as their config is unchanged.

    ``protocol`` names the wire format the upstream speaks ("openai", "anthropic", "ollama"). When a
    client speaks the same one, the API layer uses :meth:`forward` instead of ``chat``: the client's
    own body (with ``model`` rewritten) goes upstream and the upstream's bytes come back untouched, so
    nothing a provider adds is lost to translation.
    """

    protocol: ClassVar[str] = "openai"

    def __init__(self, config: BackendConfig, key: Secret | None) -> None:
        self.config = config
        self.name = config.name
        self._key = key
        # The key as bytes, only for removing it from answers (an upstream may echo the key it was
        # sent; relayed bytes are scrubbed with this before a client sees them).
        value = key.reveal() if key is not None else ""
        self.key_bytes: bytes | None = value.encode() if len(value) >= MIN_ANSWER_SCRUBBED_KEY else None

    @abc.abstractmethod
    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion: ...

    @abc.abstractmethod
    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream: ...

    @abc.abstractmethod
    async def probe(self, timeout_s: float) -> ProbeResult: ...

    async def forward(
        self, path: str, body: dict[str, Any], stream: bool, headers: Mapping[str, str] | None = None
    ) -> Completion | ChatStream:
        """Send a request in this backend's own protocol to ``path`` and relay the answer as is.

        ``headers``: request headers of the client's own protocol that it may pass on (checked by
        the API layer; today only Anthropic's ``anthropic-beta``); other protocols ignore them."""
        raise BackendError(
            400,
            f"backend '{self.name}' ({self.config.provider}) cannot serve {path}",
            code="unsupported_by_backend",
            type_="invalid_request_error",
        )

    async def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release pooled connections."""

    def same_key(self, key: Secret | None) -> bool:
        """Whether ``key`` is the credential this adapter was built with (a rotated key needs a new one)."""
        return self._key == key

    def scrub(self, text: str) -> str:
        """Remove this backend's credential from upstream text before it is shown to anyone."""
        if self._key is not None:
            value = self._key.reveal()
            if value:
                text = text.replace(value, "***")
        return text


def sse_error_event(message: str, code: str, type_: str = "upstream_error") -> bytes:
    """The event that ends a stream which failed mid-way (the OpenAI SDK raises on it)."""
    payload = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"
