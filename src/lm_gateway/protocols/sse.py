"""Server-sent events: an incremental decoder and an encoder.

The decoder follows the WHATWG "event stream interpretation" rules, because upstreams differ in the
details the Rust gateway got wrong: ``\\r\\n`` and lone ``\\r`` line endings, ``data:`` without a space,
events split at any byte (including inside a multibyte UTF-8 character or between ``\\r`` and ``\\n``).
Bytes are buffered and only complete lines are decoded, so a split character is never corrupted; line
terminators are ASCII and can never occur inside a multibyte sequence, so decoding per line is exact.

End of stream (:meth:`SSEDecoder.flush`): the spec discards an event that was not closed by a blank
line. We deliberately keep one case: when every line of the pending event was fully received (only the
final blank line is missing), the event is dispatched, because some proxies drop that last blank line
and the final event (``message_stop``, ``[DONE]``) carries meaning. If the stream stops in the middle of
a line, the whole pending event is discarded: the cut line may be a truncated part of the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "encode_event"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``event`` is None when the stream did not name it (the spec's "message")."""

    event: str | None
    data: str
    id: str | None = None


class SSEDecoder:
    """Feed raw bytes as they arrive; get back the events completed so far."""

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" belongs to it
        self._started = False  # a leading byte-order mark is stripped once
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._buf += chunk
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buf):
            self._line(self._buf[start : match.start()], events)
            start = match.end()
        if start:
            self._skip_lf = start == len(self._buf) and self._buf[-1:] == b"\r"
            del self._buf[:start]
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: dispatch a pending event only if none of its lines was cut (see module doc)."""
        events: list[SSEEvent] = []
        if self._buf:
            self._data.clear()  # the stream stopped inside a line: the pending event may be truncated
        self._buf.clear()
        self._dispatch(events)
        return events

    def _line(self, raw: bytes | bytearray, events: list[SSEEvent]) -> None:
        line = raw.decode("utf-8", errors="replace")
        if not self._started:
            self._started = True
            line = line.removeprefix(_BOM)
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return  # comment (often used as a keep-alive)
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the spec requires.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(self._event or None, "\n".join(self._data), self._last_id))
            self._data.clear()
        self._event = ""


def encode_event(data: bytes | str, event: str | None = None) -> bytes:
    """Frame already-serialised ``data`` as one event; each line of it becomes its own ``data:`` line."""
    raw = data.encode() if isinstance(data, str) else data
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
