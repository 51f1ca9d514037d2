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

__all__ = ["SSEDecoder", "SSEEvent", "encode_event", "text_run"]

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
        """The events completed by ``chunk``."""
        blocks = self.feed_blocks(chunk)
        if blocks is None:
            return self._feed_lines(chunk)
        events: list[SSEEvent] = []
        for block in blocks:
            event = self.event(block)
            if event is not None:
                events.append(event)
        return events

    def feed_blocks(self, chunk: bytes) -> list[str] | None:
        """The fast path's framing: the text of each event ``chunk`` completes, one block of
        ``\\n``-separated lines per event, to be read with :meth:`event` (in order: it keeps the last
        event id). None when ``chunk`` needs the general line-by-line path instead (:meth:`feed`;
        nothing was consumed then)."""
        text = self.feed_text(chunk)
        if text is None:
            return None
        return text.split("\n\n") if text else []  # (an empty block has no event either)

    def feed_text(self, chunk: bytes) -> str | None:
        """:meth:`feed_blocks` before the split: the events ``chunk`` completes as one text, blocks
        separated by a blank line (``\\n\\n``; the text may end with one too), for a reader that
        scans them in one go; ``""`` when none is complete yet.

        Real upstreams send ``\\n``-only streams of whole events; those are framed with a few bytes
        operations per read, and their text decoded in one go, instead of line by line in Python
        (line endings are ASCII, so decoding lines apart would give the same text). That needs an
        event boundary (no field of a pending event read yet), no ``\\r`` anywhere (``\\n\\n`` then
        ends exactly the events) and no possible byte-order mark (which :meth:`_line` strips); the
        bytes after the last complete event wait, unparsed.
        """
        if self._data or self._event or self._skip_lf or b"\r" in chunk:
            return None
        buf = self._buf
        if not self._started:
            if (buf or chunk)[:1] == b"\xef":
                return None
            self._started = bool(buf or chunk)
        if buf:
            buf += chunk
            end = buf.rfind(b"\n\n")
            if end < 0:
                return ""
            text = bytes(buf[:end])
            del buf[: end + 2]
        elif chunk[-2:] == b"\n\n":  # a read of whole events, as usual: no copy to cut it
            return chunk.decode("utf-8", "replace")
        else:
            end = chunk.rfind(b"\n\n")
            if end < 0:
                buf += chunk
                return ""
            text = chunk[:end]
            buf += chunk[end + 2 :]
        return text.decode("utf-8", "replace")

    def event(self, block: str) -> SSEEvent | None:
        """The event one block from :meth:`feed_blocks` makes (None when it has no ``data``: only
        comments or ids). One ``data: `` line, or ``event: `` then ``data: ``, is read directly;
        anything else line by line, as the general path does."""
        if block.startswith("data: ") and "\n" not in block:
            return SSEEvent(None, block[6:], self._last_id)
        name, sep, data = block.partition("\ndata: ")
        if sep and name.startswith("event: ") and "\n" not in name and "\n" not in data:
            return SSEEvent(name[7:] or None, data, self._last_id)
        events: list[SSEEvent] = []  # blank lines are only at a block's edges: one event at most
        for line in block.split("\n"):
            self._field(line, events)
        self._dispatch(events)
        return events[0] if events else None

    def _feed_lines(self, chunk: bytes) -> list[SSEEvent]:
        """The general path: every complete line, whatever its ending, read by :meth:`_line`."""
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
        if not self._buf and not self._data:  # (the usual end: nothing pending)
            self._event = ""
            return []
        events = self._feed_lines(b"") if self._buf else []  # whole lines the fast path left unread
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
        self._field(line, events)

    def _field(self, line: str, events: list[SSEEvent]) -> None:
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
    head = b"event: " + event.encode() + b"\n" if event else b""
    if b"\n" not in raw and b"\r" not in raw:  # one line, as serialised JSON always is
        return head + b"data: " + raw + b"\n\n"
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def text_run(text: str, pos: int, head: str, tail: str) -> tuple[list[str], int]:
    """The texts of the events of ``text`` (from :meth:`SSEDecoder.feed_text`) that follow each other
    from ``pos`` on and are each ``head``, a text, then ``tail``, separated by blank lines; and the
    position after the last. A stream translator's short path for the bulk of a stream, events that
    differ only in one JSON string (``head`` ends with its opening quote, ``tail`` starts with its
    closing one), all taken with a few string operations however many came in one read.

    Only plain texts are taken: printable, no quote, no backslash, not empty; their JSON string is
    then the text itself, as any encoder writes it. At the first event that is not like that (or an
    event of another kind between two of them), nothing is taken: ``([], pos)``, for the caller to
    read the events one by one. The split looks at the whole rest of ``text``: a caller tries once
    per read. (``text`` must start with ``head`` at ``pos``.)

    Between two such events there is exactly ``tail``, a blank line and ``head`` (a JSON string holds
    no line break), so splitting there gives the texts; what follows the last text is checked to be
    ``tail`` and the end of its event."""
    pieces = text[pos + len(head) :].split(tail + "\n\n" + head)
    last = pieces[-1]
    quote = last.find('"')
    after = quote + len(tail)
    if (
        quote < 0
        or not last.startswith(tail, quote)
        or (after != len(last) and not last.startswith("\n\n", after))
    ):
        return [], pos
    pieces[-1] = last[:quote]
    body = "".join(pieces)
    if '"' in body or "\\" in body or not body.isprintable() or not all(pieces):
        return [], pos
    return pieces, min(len(text), len(text) - len(last) + after + 2)
