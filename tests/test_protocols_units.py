"""Properties of ``lm_gateway.protocols`` that fixtures cannot express: random-split round trips,
purity (inputs never mutated, no I/O imports), idempotent ``finish``, id uniqueness."""

from __future__ import annotations

import ast
import copy
import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest

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
    "re",
    "time",
    "typing",
    "uuid",
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
