"""Golden conformance suite for ``lm_gateway.protocols``: runs every case in ``tests/golden/*.json``.

The fixture format, the split strategies and the placeholder rules are described in
``tests/golden/README.md``. In short, a case gives an input, the chain of pure functions or stream
translators to run, and the expected output written from the wire specifications. Raw stream inputs
are replayed under several byte-splitting strategies (whole, one byte at a time, inside every
multibyte UTF-8 character, between every ``\\r\\n`` pair, fixed odd sizes), which must all give the
same result. Every case also checks that its input was not mutated (the functions are pure).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lm_gateway.protocols import UpstreamStreamError, anthropic, ndjson, ollama, openai, sse

GOLDEN = Path(__file__).parent / "golden"

# --------------------------------------------------------------------------------------------------
# Steps: dict → dict functions, and stream stages (iterator → iterator, fed item by item).
# --------------------------------------------------------------------------------------------------

DictStep = Callable[..., Any]

DICT_STEPS: dict[str, DictStep] = {
    "anthropic.request_from_openai": anthropic.request_from_openai,
    "anthropic.response_to_openai": anthropic.response_to_openai,
    "anthropic.request_to_openai": anthropic.request_to_openai,
    "anthropic.response_from_openai": anthropic.response_from_openai,
    "anthropic.count_tokens_estimate": anthropic.count_tokens_estimate,
    "anthropic.error_to_openai": anthropic.error_to_openai,
    "anthropic.error_from_openai": anthropic.error_from_openai,
    "ollama.chat_request_from_openai": ollama.chat_request_from_openai,
    "ollama.chat_response_to_openai": ollama.chat_response_to_openai,
    "ollama.chat_request_to_openai": ollama.chat_request_to_openai,
    "ollama.generate_request_to_openai": ollama.generate_request_to_openai,
    "ollama.chat_response_from_openai": ollama.chat_response_from_openai,
    "ollama.generate_response_from_openai": ollama.generate_response_from_openai,
    "ollama.error_to_openai": ollama.error_to_openai,
    "openai.chunks_from_completion": openai.chunks_from_completion,
    "openai.usage_of": lambda obj: list(openai.usage_of(obj)),
    "openai.parse_arguments": openai.parse_arguments,
}

# Functions called with the case's kwargs only (no input value).
CALLS: dict[str, Callable[..., Any]] = {
    "openai.error_payload": openai.error_payload,
    "anthropic.error_body": anthropic.error_body,
    "anthropic.error_event": lambda **kw: list(anthropic.StreamFromOpenAI("m").error_event(**kw)),
    "ollama.error_line": ollama.error_line,
    "ollama.tags_payload": ollama.tags_payload,
    "ollama.show_payload": ollama.show_payload,
    "ollama.version_payload": ollama.version_payload,
    "sse.encode_event": lambda **kw: sse.encode_event(**kw).decode(),
    "ndjson.encode_line": lambda **kw: ndjson.encode_line(**kw).decode(),
}


def _sse_decode(chunks: Iterable[bytes]) -> Iterator[sse.SSEEvent]:
    decoder = sse.SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.flush()


def _ndjson_decode(chunks: Iterable[bytes]) -> Iterator[Any]:
    decoder = ndjson.NDJSONDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.flush()


def _parse_openai(events: Iterable[sse.SSEEvent]) -> Iterator[dict[str, Any]]:
    for event in events:
        chunk = openai.parse_stream_event(event)
        if chunk is not None:
            yield chunk


def _translator(factory: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def run(items: Iterable[Any], **kwargs: Any) -> Iterator[Any]:
        translator = factory(**kwargs)
        for item in items:
            yield from translator.feed(item)
        yield from translator.finish()

    return run


def _accumulate(chunks: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    acc = openai.StreamAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    yield acc.result()


def _encode_anthropic(events: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    yield "".join(
        sse.encode_event(json.dumps(data, separators=(",", ":")), name).decode() for name, data in events
    )


def _encode_ndjson(lines: Iterable[Any]) -> Iterator[str]:
    yield "".join(ndjson.encode_line(line).decode() for line in lines)


STREAM_STEPS: dict[str, Callable[..., Iterator[Any]]] = {
    "sse.decode": _sse_decode,
    "ndjson.decode": _ndjson_decode,
    "openai.parse_stream": _parse_openai,
    "openai.accumulate": _accumulate,
    "anthropic.StreamToOpenAI": _translator(anthropic.StreamToOpenAI),
    "anthropic.StreamFromOpenAI": _translator(anthropic.StreamFromOpenAI),
    "ollama.ChatStreamToOpenAI": _translator(ollama.ChatStreamToOpenAI),
    "ollama.ChatStreamFromOpenAI": _translator(ollama.ChatStreamFromOpenAI),
    "ollama.GenerateStreamFromOpenAI": _translator(ollama.GenerateStreamFromOpenAI),
    "anthropic.encode_events": _encode_anthropic,
    "ndjson.encode": _encode_ndjson,
}

# --------------------------------------------------------------------------------------------------
# Inputs: raw byte streams are built from the case, then split in many ways.
# --------------------------------------------------------------------------------------------------


def _dump(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def raw_input(case: dict[str, Any]) -> bytes | None:
    """The raw upstream bytes of a stream case, or None for a case with a JSON input."""
    end = case.get("line_ending", "\n")
    if "input_raw" in case:
        return str(case["input_raw"]).encode()
    if "input_raw_hex" in case:
        return bytes.fromhex(case["input_raw_hex"])
    if "input_sse" in case:
        text = ""
        for name, data in case["input_sse"]:
            text += (f"event: {name}{end}" if name else "") + f"data: {_dump(data)}{end}{end}"
        return text.encode()
    if "input_ndjson" in case:
        return "".join(_dump(obj) + end for obj in case["input_ndjson"]).encode()
    return None


def split_strategies(raw: bytes) -> dict[str, list[bytes]]:
    """Every way the suite cuts a raw stream; a correct decoder gives the same result for each."""
    strategies: dict[str, list[bytes]] = {
        "whole": [raw],
        "bytewise": [raw[i : i + 1] for i in range(len(raw))],
    }
    for size in (2, 3, 7):
        strategies[f"size{size}"] = [raw[i : i + size] for i in range(0, len(raw), size)]
    for pos in range(1, len(raw)):
        if raw[pos] & 0xC0 == 0x80:  # a UTF-8 continuation byte: cut inside the character
            strategies.setdefault(f"utf8@{pos}", [raw[:pos], raw[pos:]])
        if raw[pos - 1 : pos + 1] == b"\r\n":
            strategies.setdefault(f"crlf@{pos}", [raw[:pos], raw[pos:]])
    return strategies


# --------------------------------------------------------------------------------------------------
# Expected values: compact chunk notation and placeholders.
# --------------------------------------------------------------------------------------------------


def expand_chunks(case: dict[str, Any]) -> list[dict[str, Any]]:
    """``expected_chunks`` (compact) → full ``chat.completion.chunk`` dicts, per the README."""
    envelope = case["envelope"]
    full = []
    for item in case["expected_chunks"]:
        chunk = {"id": envelope["id"], "object": "chat.completion.chunk", "created": envelope["created"]}
        chunk["model"] = envelope["model"]
        if set(item) == {"usage"}:
            chunk["choices"] = []
            chunk["usage"] = item["usage"]
        else:
            delta = item.get("delta", {})
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": item.get("finish_reason")}]
        full.append(chunk)
    return full


PLACEHOLDER = re.compile(r"^\{\{(created|created_at|any|gen:[^:{}]*:[^{}]+)\}\}$")  # "{{ .Prompt }}" is data
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class Matcher:
    """Compares actual to expected; ``{{...}}`` strings in expected match generated values."""

    def __init__(self) -> None:
        self.bound: dict[str, Any] = {}

    def check(self, expected: Any, actual: Any, path: str = "$") -> None:
        if isinstance(expected, str) and (match := PLACEHOLDER.match(expected)):
            self._placeholder(match.group(1), actual, path)
        elif isinstance(expected, dict):
            assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
            assert expected.keys() == actual.keys(), (
                f"{path}: keys differ: missing {sorted(expected.keys() - actual.keys())}, "
                f"unexpected {sorted(actual.keys() - expected.keys())}"
            )
            for key in expected:
                self.check(expected[key], actual[key], f"{path}.{key}")
        elif isinstance(expected, list):
            assert isinstance(actual, list | tuple), f"{path}: expected a list, got {actual!r}"
            assert len(expected) == len(actual), (
                f"{path}: {len(actual)} items, expected {len(expected)}: {actual!r}"
            )
            for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
                self.check(want, got, f"{path}[{index}]")
        else:
            assert type(expected) is type(actual) and expected == actual, (
                f"{path}: {actual!r} != {expected!r}"
            )

    def _placeholder(self, spec: str, actual: Any, path: str) -> None:
        if spec == "any":
            return
        if spec == "created":
            assert isinstance(actual, int) and actual > 1_600_000_000, f"{path}: not a timestamp: {actual!r}"
            return
        if spec == "created_at":
            assert isinstance(actual, str) and RFC3339.match(actual), f"{path}: not RFC 3339: {actual!r}"
            return
        kind, prefix, label = spec.split(":", 2)
        assert kind == "gen", f"unknown placeholder {spec!r}"
        assert isinstance(actual, str) and re.fullmatch(re.escape(prefix) + "[0-9a-f]{24}", actual), (
            f"{path}: {actual!r} is not a generated {prefix!r} id"
        )
        if label in self.bound:
            assert self.bound[label] == actual, (
                f"{path}: {{{{{spec}}}}} bound to {self.bound[label]!r}, got {actual!r}"
            )
        else:
            assert actual not in self.bound.values(), f"{path}: generated id {actual!r} is not unique"
            self.bound[label] = actual


# --------------------------------------------------------------------------------------------------
# Running a case.
# --------------------------------------------------------------------------------------------------


def steps_of(case: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "steps" in case:
        return [(step["fn"], step.get("kwargs", {})) for step in case["steps"]]
    return [(case["fn"], case.get("kwargs", {}))]


def to_plain(value: Any) -> Any:
    """SSEEvent and tuples → JSON-like values, so they compare with fixture JSON."""
    if isinstance(value, sse.SSEEvent):
        return {"event": value.event, "data": value.data, "id": value.id}
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    return value


def run_chain(case: dict[str, Any], source: Any) -> tuple[Any, BaseException | None]:
    """Applies the case's steps to ``source``; returns the output (so far) and any protocol error.

    Stream stages are generators, so items flow through the whole chain one at a time, as in the
    gateway: outputs produced before an error are returned with it.
    """
    value: Any = source
    streaming = False
    out: list[Any] = []
    try:
        for name, kwargs in steps_of(case):
            if name in STREAM_STEPS:
                value = STREAM_STEPS[name](value, **kwargs)
                streaming = True
                continue
            if streaming:  # a dict step after a stream stage applies to its single result
                value, streaming = _single(value), False
            value = DICT_STEPS[name](value, **kwargs) if name in DICT_STEPS else CALLS[name](**kwargs)
        if not streaming:
            return value, None
        for item in value:
            out.append(item)
        return out, None
    except ValueError as exc:  # ProtocolError and its subclasses; check_case verifies the exact type
        return (out if streaming else None), exc


def _single(items: Iterable[Any]) -> Any:
    collected = list(items)
    assert len(collected) == 1, f"expected one item from the stream stage, got {len(collected)}"
    return collected[0]


def check_case(case: dict[str, Any], output: Any, error: BaseException | None) -> None:
    output = to_plain(output)
    if "expected_chunks" in case:
        expected: Any = expand_chunks(case)
    else:
        expected = case.get("expected")
    want_error = case.get("expected_error")
    if want_error is None:
        assert error is None, f"unexpected error: {error!r}"
    else:
        assert error is not None, f"expected {want_error['type']}, got output {output!r}"
        assert type(error).__name__ == want_error["type"], f"expected {want_error['type']}, got {error!r}"
        assert want_error.get("message", "") in str(error), f"message {str(error)!r}"
        if "error_type" in want_error:
            assert isinstance(error, UpstreamStreamError) and error.type == want_error["error_type"]
        if expected is None:
            return
    if single := case.get("single_output"):
        assert single is True
        output = _single(output)
    Matcher().check(expected, output)


def load_cases() -> list[Any]:
    params = []
    for path in sorted(GOLDEN.glob("*.json")):
        group = json.loads(path.read_text(encoding="utf-8"))
        for case in group["cases"]:
            params.append(pytest.param(case, id=f"{path.stem}/{case['name']}"))
    return params


CASES = load_cases()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: dict[str, Any]) -> None:
    raw = raw_input(case)
    if raw is None:
        source = copy.deepcopy(case.get("input"))
        output, error = run_chain(case, source)
        assert source == case.get("input"), "the input was mutated: translations must be pure"
        check_case(case, output, error)
        return
    for strategy, chunks in split_strategies(raw).items():
        output, error = run_chain(case, chunks)
        try:
            check_case(case, output, error)
        except AssertionError as exc:
            raise AssertionError(f"[split strategy {strategy}] {exc}") from exc


def test_suite_size_and_unique_names() -> None:
    names = [param.id for param in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len(names) >= 150
