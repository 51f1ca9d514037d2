"""Re-encode an internal (OpenAI SSE) answer stream in a client's own protocol, chunk by chunk.

Shared by the Anthropic and Ollama endpoints: the bytes are framed once (``SSEDecoder``), each chunk
goes through the protocol's stream translator, and whatever that produces for one network chunk is
written in one piece. An error chunk from the upstream (or a broken stream) becomes the protocol's
own error frame, after which the stream ends; the error is noted on the stream so that the traffic
entry records the failure (the relay underneath is closed at that point and cannot note it itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from lm_gateway.backends import ChatStream
from lm_gateway.protocols import ProtocolError, UpstreamStreamError
from lm_gateway.protocols.openai import parse_stream_event
from lm_gateway.protocols.sse import SSEDecoder


class StreamTranslator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


async def reencode(
    stream: ChatStream,
    translator: StreamTranslator,
    encode: Callable[[Any], bytes],
    error_frame: Callable[[str, str], bytes],
) -> AsyncIterator[bytes]:
    chunks = aiter(stream)
    decoder = SSEDecoder()
    # What one network chunk became so far; on an error it still goes out, before the error frame
    # (an upstream often sends its last content and its error in the same write).
    out: list[bytes] = []
    try:
        async for raw in chunks:
            for event in decoder.feed(raw):
                chunk = parse_stream_event(event)
                if chunk is not None:
                    out.extend(encode(item) for item in translator.feed(chunk))
            if out:
                piece, out = b"".join(out), []
                yield piece
        out.extend(encode(item) for item in translator.finish())
        piece, out = b"".join(out), []
        yield piece
    except UpstreamStreamError as exc:
        stream.error = stream.error or exc.message
        yield b"".join(out) + error_frame(exc.message, exc.type)
    except ProtocolError as exc:
        message = f"the upstream stream was malformed: {exc}"
        stream.error = stream.error or message
        yield b"".join(out) + error_frame(message, "api_error")
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
