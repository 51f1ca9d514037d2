"""Pure wire-format translation between the client/backend protocols and the internal format.

The internal representation is the OpenAI chat-completions shape held as plain dicts (request body,
response body, stream chunks). One module per wire format holds the mappings in both directions:

- :mod:`.openai`: helpers for the internal format itself (chunks, accumulation, errors, ids);
- :mod:`.anthropic`: Anthropic Messages, both as a backend (``*_from_openai`` requests,
  ``*_to_openai`` responses) and as a client protocol (the inverse functions);
- :mod:`.ollama`: Ollama ``/api/chat`` and ``/api/generate``, both directions, plus the small
  ``/api/tags`` / ``/api/show`` / ``/api/version`` shapes;
- :mod:`.sse` and :mod:`.ndjson`: incremental framing decoders and encoders.

Everything here is data in, data out: no sockets, no asyncio, no files. The only impurities are fresh
random ids and the current time where a wire format demands them (the golden suite normalises both).
Stream translators are small stateful objects with ``feed(item) -> list`` and ``finish() -> list``, so
the same code serves a live stream and a replayed fixture. The gateway drives them through
``feed_bytes(raw, out)`` and ``finish_bytes(out)`` instead: the bytes as they arrive in, the client's
bytes out, each translator decoding and encoding itself, so that the common events of a stream can
take a short path (recognised in the raw event text, framed from per-stream templates) that gives
exactly what the general path gives (the fast-path properties in ``tests/test_protocols_units.py``).

Errors: malformed wire data raises :class:`ProtocolError` (a ``ValueError``); an error reported by the
upstream *inside* a stream (Anthropic ``event: error``, an Ollama ``{"error": ...}`` line, an OpenAI
``data: {"error": ...}`` chunk) raises :class:`UpstreamStreamError`, so the caller can turn it into the
client protocol's own error event instead of silently truncating the stream.
"""

from __future__ import annotations

__all__ = ["MALFORMED", "ProtocolError", "UpstreamStreamError", "malformed"]


class ProtocolError(ValueError):
    """Wire data that cannot be translated: invalid JSON, a truncated stream, an unsupported construct."""


class UpstreamStreamError(ProtocolError):
    """The upstream reported an error in-band, after the response had started.

    ``type`` is the upstream's error type (for example Anthropic's ``overloaded_error``), kept so the
    client-facing error event can carry it on.
    """

    def __init__(self, message: str, type: str = "api_error") -> None:
        super().__init__(message)
        self.message = message
        self.type = type


# What a translator fed an upstream document of a shape it does not expect may raise besides
# ProtocolError (``delta`` a string where an object belongs: AttributeError; a list index or key
# missing: IndexError, KeyError). Data from an upstream is untrusted: every one of them means "the
# upstream sent something malformed", which the caller reports as such, never as a crash.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def malformed(exc: BaseException) -> str:
    """What was wrong, for the client: a ProtocolError's own words, else only the kind of mismatch
    (a Python message names internals, not the upstream's mistake)."""
    if isinstance(exc, ProtocolError):
        return str(exc)
    return f"a field of an unexpected type or shape ({type(exc).__name__})"
