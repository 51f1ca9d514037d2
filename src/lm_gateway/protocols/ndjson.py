"""Newline-delimited JSON (Ollama's streaming framing): an incremental decoder and a line encoder.

Lines are split on ``\\n`` only (a trailing ``\\r`` is whitespace to JSON) and parsed once complete, so
a line cut anywhere, even inside a multibyte character, is parsed whole. Blank lines are skipped. A
line that is not JSON raises :class:`ProtocolError`: unlike SSE comments there is nothing legitimate
to skip, and guessing would hide a broken upstream. At end of stream a last line without a newline is
still parsed (Ollama's non-streamed replies end that way); if it is not valid JSON it was truncated and
raises too.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import ProtocolError

__all__ = ["NDJSONDecoder", "encode_line"]

_MAX_ECHO = 200  # how much of an offending line an error message quotes


class NDJSONDecoder:
    """Feed raw bytes as they arrive; get back the JSON values of the lines completed so far."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        self._buf += chunk
        end = self._buf.rfind(b"\n")
        if end < 0:
            return []
        lines = self._buf[:end].split(b"\n")
        del self._buf[: end + 1]
        return [_parse(line) for line in lines if line.strip()]

    def flush(self) -> list[Any]:
        rest = bytes(self._buf)
        self._buf.clear()
        return [_parse(rest)] if rest.strip() else []


def _parse(line: bytes | bytearray) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        shown = bytes(line[:_MAX_ECHO]).decode("utf-8", errors="replace")
        raise ProtocolError(f"invalid JSON line in NDJSON stream: {shown!r}") from exc


def encode_line(obj: Any) -> bytes:
    """One NDJSON line: compact JSON, UTF-8, terminated by ``\\n``."""
    return orjson.dumps(obj) + b"\n"
