"""Properties of ``lm_gateway.protocols`` that fixtures cannot express: random-split round trips,
purity (inputs never mutated, no I/O imports), idempotent ``finish``, id uniqueness, and fast paths
that give exactly what the general path gives."""

from __future__ import annotations

import ast
import copy
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lm_gateway.protocols as protocols
from lm_gateway.protocols import ProtocolError, UpstreamStreamError, anthropic, ndjson, ollama, openai, sse

ALPHABET = 'ab :\n\r\r\n{}"é日🎉\\'


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def _random_splits(rng: random.Random, raw: bytes) -> list[bytes]:
    cuts = (
        sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(0, 8)))) if len(raw) > 1 else []
    )
    bounds = [0, *cuts, len(raw)]
    return [raw[start:end] for start, end in itertools.pairwise(bounds)]


def test_sse_encode_decode_roundtrip_under_random_splits() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        events = [
            (_random_text(rng).replace("\r", "").replace("\n", "") or None, _random_text(rng))
            for _ in range(3)
        ]
        raw = b"".join(sse.encode_event(data, name) for name, data in events)
        decoder = sse.SSEDecoder()
        decoded = [
            event for part in _random_splits(rng, raw) for event in decoder.feed(part)
        ] + decoder.flush()
        # encode_event turns every line ending into "\n"; a leading space is eaten by the "data: " separator
        expected = [(name, re.sub(r"\r\n|\r", "\n", data)) for name, data in events]
        assert [(event.event, event.data) for event in decoded] == expected


def test_encode_event_accepts_bytes() -> None:
    assert sse.encode_event(b'{"a":1}', "ping") == b'event: ping\ndata: {"a":1}\n\n'


def test_ndjson_roundtrip_under_random_splits() -> None:
    rng = random.Random(99)
    for _ in range(200):
        objs = [{"k": _random_text(rng), "n": rng.randint(-5, 5)} for _ in range(rng.randint(1, 4))]
        raw = b"".join(ndjson.encode_line(obj) for obj in objs)
        decoder = ndjson.NDJSONDecoder()
        decoded = [obj for part in _random_splits(rng, raw) for obj in decoder.feed(part)] + decoder.flush()
        assert decoded == objs


def test_openai_chunk_encoding_roundtrip() -> None:
    chunk = openai.completion_chunk(id="c", model="m", created=1, delta={"content": "line1\nline2 ✓"})
    decoder = sse.SSEDecoder()
    events = decoder.feed(openai.encode_chunk(chunk) + openai.DONE)
    assert [openai.parse_stream_event(event) for event in events] == [chunk, None]


def test_generated_ids_are_unique_and_well_formed() -> None:
    ids = {openai.new_id("call_") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", value) for value in ids)


def test_each_stream_keeps_one_id_and_streams_differ() -> None:
    def run() -> list[dict[str, Any]]:
        stream = ollama.ChatStreamToOpenAI(include_usage=True, model="m")
        lines = [
            {"message": {"role": "assistant", "content": "a"}, "done": False},
            {"message": {}, "done": True},
        ]
        return [chunk for line in lines for chunk in stream.feed(line)] + stream.finish()

    first, second = run(), run()
    assert len({chunk["id"] for chunk in first}) == 1
    assert len({chunk["created"] for chunk in first}) == 1
    assert first[0]["id"] != second[0]["id"]


CHUNKS = [
    openai.completion_chunk(id="c", model="m", created=1, delta={"role": "assistant", "content": "Hi"}),
    openai.completion_chunk(
        id="c", model="m", created=1, delta={"tool_calls": [openai.tool_call_header(0, "call_1", "f")]}
    ),
    openai.completion_chunk(
        id="c", model="m", created=1, delta={"tool_calls": [openai.tool_call_fragment(0, "{}")]}
    ),
    openai.completion_chunk(id="c", model="m", created=1, finish_reason="tool_calls"),
    openai.completion_chunk(id="c", model="m", created=1, usage=openai.make_usage(1, 2), choices_empty=True),
]


@pytest.mark.parametrize(
    "factory",
    [
        lambda: anthropic.StreamFromOpenAI("m"),
        lambda: ollama.ChatStreamFromOpenAI("m"),
        lambda: ollama.GenerateStreamFromOpenAI("m"),
    ],
)
def test_client_stream_encoders_do_not_mutate_chunks_and_finish_once(factory: Any) -> None:
    chunks = copy.deepcopy(CHUNKS)
    stream = factory()
    for chunk in chunks:
        stream.feed(chunk)
    assert chunks == CHUNKS
    assert stream.finish()
    assert stream.finish() == []


def test_accumulator_does_not_mutate_chunks() -> None:
    chunks = copy.deepcopy(CHUNKS)
    acc = openai.StreamAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    result = acc.result()
    result["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "changed"
    assert chunks == CHUNKS


def test_backend_stream_finish_after_end_is_empty() -> None:
    stream = anthropic.StreamToOpenAI(include_usage=False, model="m")
    for data in ('{"type":"message_start","message":{"id":"msg_1","usage":{}}}', '{"type":"message_stop"}'):
        stream.feed(sse.SSEEvent(None, data))
    with pytest.raises(ProtocolError):
        anthropic.StreamToOpenAI(include_usage=False, model="m").finish()
    assert stream.finish() == []


def test_exception_hierarchy() -> None:
    error = UpstreamStreamError("boom", "overloaded_error")
    assert isinstance(error, ProtocolError) and isinstance(error, ValueError)
    assert (str(error), error.message, error.type) == ("boom", "boom", "overloaded_error")


PURE_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "math",
    "random",
    "re",
    "time",
    "typing",
    "orjson",
}


def test_protocols_import_nothing_that_does_io() -> None:
    """The package is pure: no sockets, asyncio, HTTP clients or files; only these modules."""
    for path in Path(protocols.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert names <= PURE_IMPORTS, f"{path.name} imports {names - PURE_IMPORTS}"


def test_created_at_is_utc_rfc3339() -> None:
    line = ollama.error_line("x")
    assert line == {"error": "x"}
    final = ollama.ChatStreamFromOpenAI("m").finish()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", final["created_at"])


# --- fast paths: each must give exactly what the general path gives ----------------------------------
#
# The gateway's stream path takes shortcuts (SSE framed a whole event at a time, text deltas
# recognised in the raw event text and framed from templates). These properties run random streams,
# cut at random places, through the shortcut and through the general path, and want the same bytes,
# the same exception and the same usage.

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SSE_LINES = [
    b"data: x",
    b"data:y",
    b"data:  two spaces",
    b'data: {"a":1}',
    b"data: caf\xc3\xa9 \xe6\x97\xa5\xf0\x9f\x8e\x89",
    b"data: bad \xff\xfe\xc3",
    b"data",
    b"data: ",
    b"event: e",
    b"event: ",
    b"event:x",
    b"id: 7",
    b"id: a\x00b",
    b": keep-alive",
    b"retry: 5",
    b"foo: bar",
    b"\xef\xbb\xbfdata: bom",
    b"",
    b"",
]
_ENDINGS = [b"\n"] * 6 + [b"\r\n", b"\r"]


@st.composite
def _cut(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(raw)), max_size=6))))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def _sse_stream(draw: st.DrawFn) -> list[bytes]:
    """Events of one to four random lines each, then a blank line (sometimes two, sometimes none)."""
    ending = st.sampled_from(_ENDINGS) if draw(st.booleans()) else st.just(b"\n")  # \n only: fast path
    raw = b""
    for lines in draw(st.lists(st.lists(st.sampled_from(_SSE_LINES), min_size=1, max_size=4), max_size=8)):
        raw += b"".join(line + draw(ending) for line in lines)
        raw += b"".join(draw(ending) for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))))
    return draw(_cut(raw + draw(st.sampled_from([b"", b"data: cut", b"\xe6\x97"]))))


def _events(decoder: sse.SSEDecoder, parts: list[bytes], general: bool) -> list[tuple[Any, ...]]:
    feed = decoder._feed_lines if general else decoder.feed  # _feed_lines: the general path alone
    events = [event for part in parts for event in feed(part)] + decoder.flush()
    return [(event.event, event.data, event.id) for event in events]


@FAST
@given(_sse_stream())
def test_sse_fast_framing_decodes_like_the_line_by_line_path(parts: list[bytes]) -> None:
    assert _events(sse.SSEDecoder(), parts, general=False) == _events(sse.SSEDecoder(), parts, general=True)


def test_sse_fast_framing_is_taken_for_plain_streams_and_not_for_others() -> None:
    decoder = sse.SSEDecoder()
    assert decoder.feed_blocks(b"event: a\ndata: 1\n\ndata: 2\n\ndata: 3") == ["event: a\ndata: 1", "data: 2"]
    assert decoder.feed_blocks(b"\n\n") == ["data: 3"]
    assert sse.SSEDecoder().feed_blocks(b"data: 1\r\n\r\n") is None
    assert sse.SSEDecoder().feed_blocks(b"\xef\xbb\xbfdata: 1\n\n") is None


_TEXTS = st.sampled_from(
    [
        "Hi",
        "tok0 ",
        "Hello, world.",
        "é日🎉",
        'say "x"',
        "a\\b",
        "a/b",
        "line\nbreak",
        "\t",
        "\x00",
        "\u2028",
        "",
    ]
) | st.text(alphabet=st.characters(codec="utf-8"), max_size=8)


def _anthropic_event(kind: str, index: int, text: str, stop: str) -> dict[str, Any]:
    if kind == "message_start":
        return {"type": kind, "message": {"id": "msg_1", "usage": {"input_tokens": 9, "output_tokens": 1}}}
    if kind in ("text", "thinking", "tool_use", "server_tool_use"):
        block: dict[str, Any] = {
            "text": {"type": "text", "text": text},  # the API sends "" (the short path's form)
            "thinking": {"type": "thinking", "thinking": text, "signature": ""},
            "tool_use": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": text,
                "input": {"q": text} if index else {},  # index 0: no input up front
            },
        }.get(kind, {"type": kind, "text": text, "id": "srvtoolu_1", "name": text})
        return {"type": "content_block_start", "index": index, "content_block": block}
    if kind in ("text_delta", "thinking_delta", "input_json_delta", "signature_delta"):
        delta = {"type": kind, "text": text, "thinking": text, "partial_json": text, "signature": text}
        if kind == "text_delta":
            delta = {"type": kind, "text": text}  # the form the API sends: the fast path's
        return {"type": "content_block_delta", "index": index, "delta": delta}
    if kind == "message_delta":
        return {"type": kind, "delta": {"stop_reason": stop}, "usage": {"output_tokens": index}}
    if kind == "error":
        return {"type": "error", "error": {"type": "overloaded_error", "message": text}}
    if kind in ("ping", "message_stop"):
        return {"type": kind}
    return {"type": kind, "index": index}  # content_block_stop, unknown


_ANTHROPIC_KINDS = [
    "message_start",
    "text",
    "thinking",
    "tool_use",
    "server_tool_use",
    "text_delta",
    "thinking_delta",
    "input_json_delta",
    "signature_delta",
    "content_block_stop",
    "ping",
    "message_delta",
    "message_stop",
    "error",
    "future_event",
]


@st.composite
def _anthropic_stream(draw: st.DrawFn) -> list[bytes]:
    """Anthropic SSE: message_start, blocks (start, deltas of their kind, stop), message_delta and
    message_stop, each often left out, with random events thrown in; each event mostly in the API's
    own form, sometimes with other escapes, spaced JSON, no ``event:`` line, CRLF, a bad index,
    invalid JSON."""
    events = [("message_start", 0)] if draw(st.integers(0, 4)) else []  # mostly: the fast path needs it
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "text", "text", "thinking", "tool_use", "server_tool_use"]))
        delta = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}
        events.append((kind, index))
        events += [(delta.get(kind, "signature_delta"), index)] * draw(st.integers(0, 5))
        events += [("content_block_stop", index)] if draw(st.integers(0, 5)) else []
    events += [("message_delta", 1), ("message_stop", 0)] if draw(st.integers(0, 4)) else []
    for _ in range(draw(st.integers(0, 3))):
        noise = (draw(st.sampled_from(_ANTHROPIC_KINDS)), draw(st.integers(0, 2)))
        events.insert(draw(st.integers(0, len(events))), noise)
    frames = []
    for kind, index in events:
        data = _anthropic_event(kind, index, draw(_TEXTS), draw(st.sampled_from(["end_turn", "tool_use"])))
        style = draw(
            st.sampled_from(
                ["api"] * 15 + ["ascii", "spaced", "no_event", "crlf", "index01", "junk", "raw_tab"]
            )
        )
        raw = orjson.dumps(data).decode()
        if style in ("ascii", "spaced"):  # escapes orjson would not write (\u00e9, \/), or spaces
            raw = json.dumps(data, separators=(",", ":") if style == "ascii" else None).replace("/", "\\/")
        if style == "index01":
            raw = raw.replace('"index":', '"index":0', 1)
        if style == "junk":
            raw = raw[:-1]
        if style == "raw_tab":  # a control character left unescaped: not JSON
            raw = raw.replace("\\t", "\t")
        name = None if style == "no_event" else data["type"]
        frame = sse.encode_event(raw, name)
        frames.append(frame.replace(b"\n", b"\r\n") if style == "crlf" else frame)
    return draw(_cut(b"".join(frames)))


def _outcome(run: Any) -> tuple[bytes, str | None]:
    """What a run wrote, and how it failed (a malformed delta even fails outside ProtocolError)."""
    out: list[bytes] = []
    try:
        run(out)
    except Exception as exc:
        return b"".join(out), f"{type(exc).__name__}: {exc}"
    return b"".join(out), None


@FAST
@given(_anthropic_stream(), st.booleans())
def test_backend_stream_fast_path_gives_the_general_paths_bytes(parts: list[bytes], usage: bool) -> None:
    _assert_backend_fast_path_is_general(parts, usage)


def _delta(text: str, index: int = 0) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    return sse.encode_event(orjson.dumps(data), "content_block_delta")


def _anthropic_frame(kind: str, data: Any = None) -> bytes:
    raw = data if isinstance(data, str) else orjson.dumps(data or _anthropic_event(kind, 0, "", "end_turn"))
    return sse.encode_event(raw, kind)


_TEXT_START_FRAME = _anthropic_frame("content_block_start", _anthropic_event("text", 0, "", ""))
_RUN_HEAD = _anthropic_frame("message_start") + _TEXT_START_FRAME


_RUN_TEXTS = {
    "plain": [f"t{i} " for i in range(30)],
    "empty-in-the-middle": ["a", "", "b"],
    "empty-last": ["a", "b", ""],
    "escape": ["a", "line\nbreak", "b"],
    "not-printable": ["a", "\u2028", "é日🎉"],
}
"""Texts for a run of events in one read, in both directions: some the short path takes whole, some
where it must fall back."""


def _runs(event: Any) -> list[Any]:
    return [
        pytest.param(b"".join(event(text) for text in texts), id=name) for name, texts in _RUN_TEXTS.items()
    ]


@pytest.mark.parametrize(
    "run",
    [
        *_runs(_delta),
        pytest.param(
            _delta("a") + _delta("") + sse.encode_event('{"type":"ping"}', "ping"), id="empty-before-ping"
        ),
        pytest.param(_delta("a") + _delta("x").replace(b'"x"', b'"x\ty"') + _delta("b"), id="raw-tab"),
        pytest.param(_delta("a") + _delta("x").replace(b'"x"', b'"x\\u00e9"') + _delta("b"), id="u-escape"),
        pytest.param(
            _delta("a") + sse.encode_event('{"type":"ping"}', "ping") + _delta("b"), id="ping-between"
        ),
        pytest.param(_delta("a") + _delta("b", index=1) + _delta("c"), id="other-index-between"),
        pytest.param(_delta("a") + _delta("b")[:-1] + _delta("c"), id="one-newline-short"),
        pytest.param(_delta("a") + _delta("b").replace(b'"}}', b'" }}') + _delta("c"), id="spaced-end"),
        pytest.param(_delta("a") + _delta("b")[:-2], id="last-unterminated"),
        pytest.param(_delta("a") + _delta("b").replace(b'"}}', b'"}'), id="last-malformed"),
    ],
)
def test_a_run_of_text_deltas_in_one_read_gives_the_general_paths_bytes(run: bytes) -> None:
    """The deltas of a fast upstream come many to a read; the short path takes them together, and
    must fall back exactly where one of them is not a plain text delta."""
    _assert_backend_fast_path_is_general([_RUN_HEAD + run + _delta("end")], usage=False)
    _assert_backend_fast_path_is_general([_RUN_HEAD, run, _delta("end")], usage=True)


_PING_FRAME = _anthropic_frame("ping")
_BLOCK_STOP_FRAME = _anthropic_frame("content_block_stop")
_MESSAGE_DELTA_FRAME = _anthropic_frame("message_delta")
_MESSAGE_STOP_FRAME = _anthropic_frame("message_stop")


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        pytest.param(
            _RUN_HEAD + _PING_FRAME,
            _BLOCK_STOP_FRAME + _MESSAGE_DELTA_FRAME + _MESSAGE_STOP_FRAME,
            id="whole",
        ),
        pytest.param(_RUN_HEAD, _BLOCK_STOP_FRAME + _MESSAGE_DELTA_FRAME, id="no-message-stop"),
        pytest.param(
            _TEXT_START_FRAME + _PING_FRAME,
            _BLOCK_STOP_FRAME + _MESSAGE_DELTA_FRAME + _MESSAGE_STOP_FRAME,
            id="no-message-start",
        ),
        pytest.param(
            _anthropic_frame("message_start", {"type": "ping"}) + _RUN_HEAD,
            _BLOCK_STOP_FRAME + _MESSAGE_DELTA_FRAME + _MESSAGE_STOP_FRAME,
            id="message-start-that-is-a-ping",
        ),
        pytest.param(
            _RUN_HEAD,
            _BLOCK_STOP_FRAME
            + _anthropic_frame("message_delta", _anthropic_event("error", 0, "boom", ""))
            + _MESSAGE_STOP_FRAME,
            id="message-delta-that-is-an-error",
        ),
        pytest.param(
            _RUN_HEAD,
            _BLOCK_STOP_FRAME
            + _anthropic_frame("message_delta", '{"type":"message_delta",}')
            + _MESSAGE_STOP_FRAME,
            id="message-delta-not-json",
        ),
        pytest.param(
            _RUN_HEAD,
            _anthropic_frame("content_block_stop", {"type": "content_block_stop", "index": 3})
            + _MESSAGE_DELTA_FRAME
            + _MESSAGE_STOP_FRAME,
            id="stop-of-an-unknown-block",
        ),
        pytest.param(
            _RUN_HEAD,
            _BLOCK_STOP_FRAME + _MESSAGE_DELTA_FRAME + _MESSAGE_STOP_FRAME[:-2],
            id="unterminated-end",
        ),
    ],
)
def test_a_whole_answer_in_one_read_gives_the_general_paths_bytes(head: bytes, tail: bytes) -> None:
    """A short answer from a fast upstream comes in one read: its opening events and its closing
    ones are each taken in one match, and must fall back exactly where one of them is unusual."""
    run = b"".join(_delta(f"t{i} ") for i in range(5))
    for usage in (False, True):
        _assert_backend_fast_path_is_general([head + run + tail], usage)
        _assert_backend_fast_path_is_general([head, run, tail], usage)


def _assert_backend_fast_path_is_general(parts: list[bytes], usage: bool) -> None:
    # After each read, the usage so far goes in the output too: the two must agree at every step.
    def general(out: list[bytes]) -> None:
        decoder = sse.SSEDecoder()
        for part in parts:
            for event in decoder.feed(part):
                out.append(openai.encode_chunks(general_stream.feed(event)))
            out.append(orjson.dumps(general_stream.usage))
        for event in decoder.flush():
            out.append(openai.encode_chunks(general_stream.feed(event)))
        out.append(openai.encode_chunks(general_stream.finish()))

    def fast(out: list[bytes]) -> None:
        for part in parts:
            fast_stream.feed_bytes(part, out)
            out.append(orjson.dumps(fast_stream.usage))
        fast_stream.finish_bytes(out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anthropic, "now", lambda: 1_700_000_000)
        patch.setattr(anthropic, "new_id", lambda prefix: prefix + "0" * 24)
        general_stream = anthropic.StreamToOpenAI(include_usage=usage, model="m")
        fast_stream = anthropic.StreamToOpenAI(include_usage=usage, model="m")
        assert _outcome(fast) == _outcome(general)
    assert fast_stream.usage == general_stream.usage


def _openai_chunk(kind: str, text: str) -> Any:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    chunk: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    if kind == "role":
        choice["delta"] = {"role": "assistant", "content": text}
    elif kind in ("reasoning", "reasoning_content"):
        choice["delta"] = {kind: text, "content": "and text"}  # not a plain content chunk
    elif kind == "tool":
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": text}}
        choice["delta"] = {"content": "and text", "tool_calls": [call]}
    elif kind == "finish":
        choice["finish_reason"] = "stop"
    elif kind == "usage":
        return {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    elif kind == "null_usage":
        chunk["usage"] = None
    elif kind == "error":
        return {"error": {"message": text or "boom", "type": "server_error"}}
    elif kind == "odd":
        choice["delta"] = ["not", "a", "dict"]
    elif kind == "list":
        return [text]
    return {**chunk, "choices": [choice]}


_OPENAI_KINDS = ["content"] * 12 + ["role", "reasoning", "reasoning_content", "tool", "finish"]
_OPENAI_KINDS += ["usage", "null_usage", "error", "odd", "list", "done", "junk"]


@st.composite
def _openai_stream(draw: st.DrawFn) -> list[bytes]:
    frames = []
    for kind in draw(st.lists(st.sampled_from(_OPENAI_KINDS), max_size=14)):
        style = draw(st.sampled_from(["api"] * 10 + ["ascii", "spaced", "multiline", "crlf"]))
        if kind == "done":
            raw = "[DONE]"
        elif kind == "junk":
            raw = '{"choices": ['
        else:
            data = _openai_chunk(kind, draw(_TEXTS))
            raw = {
                "api": orjson.dumps(data).decode(),
                "ascii": json.dumps(data, separators=(",", ":")),
                "multiline": json.dumps(data, indent=1),
            }.get(style, json.dumps(data))
        frame = sse.encode_event(raw)
        frames.append(frame.replace(b"\n", b"\r\n") if style == "crlf" else frame)
    return draw(_cut(b"".join(frames)))


@FAST
@given(_openai_stream())
def test_client_stream_fast_path_gives_the_general_paths_bytes(parts: list[bytes]) -> None:
    _assert_client_fast_path_is_general(parts)


def _content_chunk(text: str, **fields: Any) -> bytes:
    return sse.encode_event(orjson.dumps({**_openai_chunk("content", text), **fields}))


@pytest.mark.parametrize(
    "run",
    [
        *_runs(_content_chunk),
        pytest.param(
            _content_chunk("a") + _content_chunk("b", created=2) + _content_chunk("c"), id="other-created"
        ),
        pytest.param(
            _content_chunk("a") + _content_chunk("b", usage=None) + _content_chunk("c"), id="extra-field"
        ),
        pytest.param(
            _content_chunk("a") + sse.encode_event("[DONE]") + _content_chunk("c"), id="done-between"
        ),
        pytest.param(
            _content_chunk("a") + _content_chunk('"content":"x"') + _content_chunk("c"), id="key-in-text"
        ),
        pytest.param(_content_chunk("a") + _content_chunk("b")[:-1], id="last-unterminated"),
        pytest.param(_content_chunk("a") + _content_chunk("b").replace(b'"},', b'" },'), id="spaced"),
    ],
)
def test_a_run_of_content_chunks_in_one_read_gives_the_general_paths_bytes(run: bytes) -> None:
    """After a few chunks, the short path knows the stream's own form of a content chunk and takes
    the ones in that form together; it must fall back exactly where one is not."""
    start = b"".join(_content_chunk(text) for text in ("Hel", "lo", " there"))
    end = sse.encode_event(orjson.dumps(_openai_chunk("finish", ""))) + sse.encode_event("[DONE]")
    _assert_client_fast_path_is_general([start + run + end])
    _assert_client_fast_path_is_general([start, run, end])


def test_a_run_of_chunks_in_one_read_is_not_parsed_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes translating a fast stream cheap, in both directions: the bulk of a read is taken
    in a few string operations, not parsed event by event (only the events around it are)."""
    calls: list[str] = []
    for module, name in ((anthropic, "_load_data"), (anthropic, "parse_stream_data")):
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda data, original=original: calls.append(data) or original(data)
        )
    message_start = _anthropic_event("message_start", 0, "", "")
    events = [("message_start", message_start), ("content_block_start", _anthropic_event("text", 0, "", ""))]
    events += [("content_block_delta", _anthropic_event("text_delta", 0, f"t{i} ", "")) for i in range(50)]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0})]
    events += [("message_delta", _anthropic_event("message_delta", 50, "", "end_turn"))]
    events += [("message_stop", {"type": "message_stop"})]
    out: list[bytes] = []
    backend = anthropic.StreamToOpenAI(include_usage=False, model="m")
    backend.feed_bytes(b"".join(sse.encode_event(orjson.dumps(data), name) for name, data in events), out)
    backend.finish_bytes(out)
    assert len(calls) == 2  # message_start and message_delta: the 50 deltas are not parsed
    assert b"".join(out).count(b'"content":"t') == 50
    calls.clear()
    client = anthropic.StreamFromOpenAI("m")
    client.feed_bytes(b"".join(_content_chunk(f"t{i} ") for i in range(50)) + sse.encode_event("[DONE]"), [])
    assert len(calls) <= 4  # the first chunks, the stream's form learnt from them, and [DONE]


def _assert_client_fast_path_is_general(parts: list[bytes]) -> None:
    def general(out: list[bytes]) -> None:
        decoder = sse.SSEDecoder()
        for part in parts:
            for event in decoder.feed(part):
                chunk = openai.parse_stream_event(event)
                if chunk is not None:
                    out.append(anthropic.encode_events(general_stream.feed(chunk)))
        for event in decoder.flush():  # an event the stream ended without its blank line
            chunk = openai.parse_stream_event(event)
            if chunk is not None:
                out.append(anthropic.encode_events(general_stream.feed(chunk)))
        out.append(anthropic.encode_events(general_stream.finish()))

    def fast(out: list[bytes]) -> None:
        for part in parts:
            fast_stream.feed_bytes(part, out)
        fast_stream.finish_bytes(out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anthropic, "new_id", lambda prefix: prefix + "0" * 24)
        general_stream = anthropic.StreamFromOpenAI("m", message_id="msg_1")
        fast_stream = anthropic.StreamFromOpenAI("m", message_id="msg_1")
        assert _outcome(fast) == _outcome(general)


@FAST
@given(st.text(max_size=12), st.text(max_size=12), st.integers(0, 2**40), _TEXTS)
def test_chunk_frames_are_the_encoded_chunks(id: str, model: str, created: int, text: str) -> None:
    make, frames = openai.ChunkMaker(id, model, created), openai.ChunkFrames(id, model, created)
    usage = openai.make_usage(3, len(text), 1)
    for frame, chunk in [
        (frames.contents([orjson.dumps(text).decode()[1:-1]]), make.delta({"content": text})),
        (frames.first(), make.delta({"role": "assistant", "content": ""})),
        (
            frames.delta({"role": "assistant", "content": text}),
            make.delta({"role": "assistant", "content": text}),
        ),
        (frames.finish(text), make.finish(text)),
        (frames.usage(usage), make.usage(usage)),
    ]:
        assert frame == openai.encode_chunks([chunk])
        assert openai.read_frame(frame) == chunk
    texts = [text, "b", text]
    assert frames.contents([orjson.dumps(each).decode()[1:-1] for each in texts]) == openai.encode_chunks(
        [make.delta({"content": each}) for each in texts]
    )


_PLAIN_TURN = {"model": "hint:fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize(
    ("option", "sent"),
    [
        ({}, {}),
        ({"stream_options": {"include_usage": True}, "max_completion_tokens": 7}, {"max_tokens": 7}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"top_k": 5}, {"top_k": 5}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"reasoning_effort": "low"}, {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
            {
                "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
                "tool_choice": {"type": "any"},
            },
        ),
    ],
)
def test_each_option_of_a_chat_turn_reaches_the_anthropic_request(
    option: dict[str, Any], sent: dict[str, Any]
) -> None:
    """A plain chat turn skips the option readers: each option, even alone, must still be read."""
    request = anthropic.request_from_openai({**_PLAIN_TURN, **option}, model="claude")
    plain = {"model": "claude", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]}
    assert request == {**plain, **sent, "stream": True}
