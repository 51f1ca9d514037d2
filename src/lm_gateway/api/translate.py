"""Re-encode an internal (OpenAI SSE) answer stream in a client's own protocol, chunk by chunk.

Shared by the Anthropic and Ollama endpoints: the protocol's stream translator takes the bytes as
they come and gives the client's bytes (it decodes and encodes itself, so it can take a short path
for the common chunks), and whatever one network chunk becomes is written in one piece. An error
chunk from the upstream (or a broken stream) becomes the protocol's own error frame, after which the
stream ends; the error is noted on the stream so that the traffic entry records the failure (the
relay underneath is closed at that point and cannot note it itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from lm_gateway.backends import ChatStream
from lm_gateway.protocols import MALFORMED, UpstreamStreamError, malformed


class StreamTranslator(Protocol):
    """A client-direction stream translator from ``lm_gateway.protocols``: OpenAI chunks in, the
    client protocol's items out (``feed``/``finish``); or, as :func:`reencode` uses it, the OpenAI
    SSE bytes in and the client protocol's bytes out (appended to ``out``)."""

    def feed(self, chunk: dict[str, Any]) -> list[Any]: ...

    def finish(self) -> list[Any]: ...

    def feed_bytes(self, chunk: bytes, out: list[bytes]) -> None: ...

    def finish_bytes(self, out: list[bytes]) -> None: ...


async def reencode(
    stream: ChatStream, translator: StreamTranslator, error_frame: Callable[[str, str], bytes]
) -> AsyncIterator[bytes]:
    chunks = aiter(stream)
    # What one network chunk became so far; on an error it still goes out, before the error frame
    # (an upstream often sends its last content and its error in the same write). Once the upstream
    # is done it waits for the stream's end, which follows at once: one write for both.
    out: list[bytes] = []
    try:
        async for raw in chunks:
            translator.feed_bytes(raw, out)
            if stream.upstream_done:
                continue
            piece, out = b"".join(out), []
            if piece:
                yield piece
        translator.finish_bytes(out)
        piece, out = b"".join(out), []
        yield piece
    except UpstreamStreamError as exc:
        stream.error = stream.error or exc.message
        yield b"".join(out) + error_frame(exc.message, exc.type)
    except MALFORMED as exc:
        message = f"the upstream stream was malformed: {malformed(exc)}"
        stream.error = stream.error or message
        yield b"".join(out) + error_frame(message, "api_error")
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
