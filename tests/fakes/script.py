"""The scripting vocabulary shared by every fake backend.

A test queues *behaviours* on a fake (``fake.script(Status(503), Reply(text="ok"))``); each model call
takes the next one (FIFO), or the fake's default when the queue is empty. The same dataclass means the
same thing on every fake: each fake only decides how a :class:`Reply` looks in its own wire format
(OpenAI JSON/SSE, Anthropic JSON/SSE events, Ollama JSON/NDJSON) and how its errors are shaped.

Behaviours come in three families:

* **answers** - :class:`Reply` / :class:`Stream`: a well-formed success, streamed if the request asked;
* **delivery faults** around an answer - :class:`CutStream`, :class:`Slow`, :class:`StreamError`,
  :class:`NeverEndingStream`, :class:`InvalidUTF8`, :class:`Hang`: the bytes or their timing go wrong;
* **bad responses** - :class:`Status`, :class:`Garbage`, :class:`HTML`, :class:`EmptyBody`,
  :class:`Drop`: the upstream answers with an error or with something that is not the protocol at all.

Token counts follow :func:`count_tokens` (whitespace words) unless a :class:`Usage` is given, so a
test can predict them without a tokenizer.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# --------------------------------------------------------------------------------------------------
# Pieces of an answer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the fake model makes. ``arguments`` is an object; each fake serialises it the
    way its protocol does (a JSON string for OpenAI, an object for Anthropic ``input`` and Ollama)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    """``None`` gives a deterministic id (``call_0``, ``toolu_fake_0``...) from the call's position."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported by the fake, in protocol-neutral names (each fake maps them)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


# Neutral finish reasons; each fake maps them to its own word (stop -> "end_turn" for Anthropic,
# tool_calls -> "tool_use", length -> "max_tokens"). Anything else is sent verbatim.
STOP = "stop"
LENGTH = "length"
TOOL_CALLS = "tool_calls"


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful answer, rendered in the fake's wire format; streamed when the request asks.

    Every field has a useful default, so ``Reply()`` is the fake's echo answer
    (``echo: <last user message>``, see :func:`echo_text`).
    """

    text: str | None = None
    """Assistant text; ``None`` means the echo text. ``""`` means no text at all (e.g. tool calls only)."""
    tool_calls: Sequence[ToolCall] = ()
    thinking: str | None = None
    """Reasoning text (Anthropic ``thinking`` block, Ollama ``message.thinking``, OpenAI
    ``reasoning_content``). Fakes whose protocol gates thinking on a request flag (Anthropic
    ``thinking``, Ollama ``think``) also produce a default one when asked and this is ``None``."""
    finish_reason: str | None = None
    """Neutral reason (:data:`STOP`, :data:`LENGTH`, :data:`TOOL_CALLS`); ``None`` = derived."""
    usage: Usage | None = None
    """``None`` = counted with :func:`count_tokens` over the request and the answer."""
    chunks: Iterable[str] | None = None
    """How ``text`` is cut into streamed deltas; ``None`` = :func:`split_words`."""
    delay: float = 0.0
    """Seconds slept between streamed events (between every SSE event / NDJSON line)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers (e.g. rate-limit headers the gateway should read or forward)."""

    def resolved_text(self, echo: str) -> str:
        """The full text: the explicit text, the joined chunks, or the echo."""
        if self.text is not None:
            return self.text
        if self.chunks is not None and isinstance(self.chunks, Sequence):
            return "".join(self.chunks)
        return echo

    def resolved_chunks(self, echo: str) -> Iterable[str]:
        """The streamed text deltas, possibly infinite (see :class:`NeverEndingStream`)."""
        if self.chunks is not None:
            return self.chunks
        return split_words(self.resolved_text(echo))


@dataclass(frozen=True, kw_only=True)
class Stream(Reply):
    """A reply spelled as its exact streamed deltas: ``Stream(chunks=["Hel", "lo"], delay=0.05)``.

    For a non-streaming request the chunks are joined into one message.
    """

    chunks: Sequence[str]


# --------------------------------------------------------------------------------------------------
# Delivery faults (wrap an answer)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request, then send nothing (not even headers) for ``seconds``; then serve ``then``
    (``None`` = the default answer). ``Hang(float("inf"))`` hangs until the client gives up, which the
    fake records as a disconnect."""

    seconds: float
    then: Behaviour | None = None


@dataclass(frozen=True, slots=True)
class CutStream:
    """Send 200 and the first ``after`` stream events, then close the TCP connection abruptly: no
    terminator (``[DONE]``, ``message_stop``, ``done: true``), not even the final HTTP chunk.

    For a non-streaming request the JSON body is cut in half (Content-Length promises the whole).
    ``mid_event``: the first half of the next event goes out before the cut (a line cut short)."""

    after: int
    reply: Reply | None = None
    mid_event: bool = False


@dataclass(frozen=True, slots=True)
class StreamError:
    """Start a normal 200 stream, then after ``after`` events send the protocol's in-stream error
    (OpenAI ``data: {"error": ...}``, Anthropic ``event: error``, Ollama ``{"error": ...}``) and end the
    body cleanly. For a non-streaming request: the protocol's error body with HTTP ``status``."""

    after: int = 1
    message: str = "Overloaded"
    error_type: str = "overloaded_error"
    status: int = 529
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class Slow:
    """Drip the response body ``size`` bytes at a time, ``interval`` seconds apart (headers go out at
    once), to exercise idle/read timeouts as opposed to connect or total timeouts."""

    interval: float = 0.05
    size: int = 1
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class NeverEndingStream:
    """A stream that never finishes: a content delta every ``interval`` seconds until the client goes
    away (recorded as a disconnect). A non-streaming request gets 200 headers and then a body that
    never completes (one space every ``interval``)."""

    interval: float = 0.05
    text: str = "tick "


INVALID_UTF8 = b"\xff\xfe"
# A private-use character the renderers emit as raw UTF-8; the writer swaps its bytes for
# ``InvalidUTF8.payload`` so invalid bytes can sit inside an otherwise well-formed JSON string.
INVALID_UTF8_MARKER = "\ue000"


@dataclass(frozen=True, slots=True)
class InvalidUTF8:
    """A reply whose content contains raw invalid UTF-8 (``payload``) inside the JSON string, in both
    the streamed and the non-streamed form."""

    text: str = f"bad bytes: {INVALID_UTF8_MARKER} end"
    payload: bytes = INVALID_UTF8


# --------------------------------------------------------------------------------------------------
# Bad responses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """An HTTP error. ``body=None`` = the protocol's own error document for that status (OpenAI
    ``{"error": {...}}``, Anthropic ``{"type": "error", ...}``, Ollama ``{"error": "..."}``); a str/bytes
    body is sent verbatim, a mapping as JSON."""

    status: int
    body: bytes | str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None
    """Message used in the generated error document; ``None`` = the HTTP reason phrase."""


@dataclass(frozen=True, slots=True)
class Garbage:
    """A body that does not parse, under a JSON content type by default."""

    body: bytes = b"not json"
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class HTML:
    """An HTML error page, as a reverse proxy or captive portal in front of the upstream would send."""

    status: int = 502
    body: bytes = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """Headers with ``Content-Length: 0`` and a JSON content type."""

    status: int = 200


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without sending any response (as a crashed or restarting upstream)."""


Behaviour: TypeAlias = (
    Reply
    | Hang
    | CutStream
    | StreamError
    | Slow
    | NeverEndingStream
    | InvalidUTF8
    | Status
    | Garbage
    | HTML
    | EmptyBody
    | Drop
)


# --------------------------------------------------------------------------------------------------
# Deterministic text helpers
# --------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+\s*|\s+")


def echo_text(user_text: str) -> str:
    """The default answer: lets a test see its own message came through (``echo: hi``). Which model
    and backend answered is in the response's ``model`` field and ``x-fake-backend`` header."""
    return f"echo: {user_text}"


def split_words(text: str) -> list[str]:
    """Cut text into word-sized deltas, keeping whitespace, so ``"".join`` gives the text back."""
    return _WORD.findall(text)


def split_pieces(text: str, parts: int = 3) -> list[str]:
    """Cut text into ``parts`` roughly equal pieces (used for tool-call argument fragments)."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: whitespace-separated words."""
    return len(text.split())


def ticks(text: str) -> Iterator[str]:
    """An endless delta source for :class:`NeverEndingStream`: ``tick 0``, ``tick 1``..."""
    for n in itertools.count():
        yield f"{text}{n} "
