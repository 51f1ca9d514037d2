"""Property-based bad input (hypothesis) against every client endpoint of a running gateway.

Malformed JSON, wrong types, missing fields, huge strings, deep nesting, invalid UTF-8, wrong content
types, random and duplicate headers, huge ``Authorization`` values: every answer is either a success
or a well-formed error of a 4xx status (or a documented upstream 5xx) in the endpoint's protocol
shape, never a 500, never a traceback, never a hang. Example counts are fixed so the run stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .gateway import (
    RunningGateway,
    three_protocol_gateway,
)

KEY = "fuzz-client-key-0d9e"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODELS = ["hint:fast", "hint:cloud", "local:fast", "t:an", "t:ol", "default", "nope", ""]
POST_PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/api/generate",
    "/api/show",
]
GET_PATHS = ["/v1/models", "/api/tags", "/api/version", "/healthz", "/status"]
# Errors the HTTP layer itself answers before any endpoint runs (always the OpenAI shape).
SERVER_LEVEL = {413, 431}
SERVER_CODES = {"malformed_request", "headers_too_large", "body_too_large", "upgrade_not_supported"}
UPSTREAM_5XX = {502, 503, 504}
# LMG_FUZZ_SCALE=10 runs ten times as many examples (a longer local hunt); CI runs the default.
SCALE = float(os.environ.get("LMG_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=int(300 * SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    limits = "max_body_bytes = 262144\nmax_json_depth = 32\nmax_header_bytes = 16384\nhealth_window = 0\n"
    env = {"FUZZ_KEY": KEY, "AN_KEY": "sk-ant-fuzz"}
    with three_protocol_gateway(tmp_path_factory.mktemp("fuzz"), limits, env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gw: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=15) as http:
        yield http


def protocol_of(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def assert_well_formed(resp: httpx.Response, path: str) -> None:
    """The invariant of the whole module."""
    status = resp.status_code
    text = resp.text
    assert status != 500 and "Traceback" not in text, (status, text[:500])
    assert status < 500 or status in UPSTREAM_5XX, (status, text[:500])
    if status < 400:
        return
    payload = json.loads(text)
    error = payload.get("error")
    server_level = status in SERVER_LEVEL or (isinstance(error, dict) and error.get("code") in SERVER_CODES)
    shape = "openai" if server_level else protocol_of(path)
    if shape == "openai" or (path in GET_PATHS and not path.startswith("/api/")):
        error = payload["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
    elif shape == "anthropic":
        assert payload["type"] == "error"
        assert isinstance(payload["error"]["message"], str) and isinstance(payload["error"]["type"], str)
    else:
        assert set(payload) == {"error"} and isinstance(payload["error"], str)
    if status >= 500:
        code = payload["error"]["code"] if shape == "openai" else None
        assert code is None or str(code).startswith("backend_"), code


# -- strategies ------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
roles = (
    st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "bogus"]) | json_values
)
content = (
    st.text(max_size=200)
    | st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["text", "image_url", "image", "tool_use", "tool_result", "x"])
                | json_values
            },
            optional={
                "text": st.text(max_size=50) | json_values,
                "image_url": json_values,
                "source": json_values,
                "input": json_values,
                "id": json_values,
                "content": json_values,
            },
        ),
        max_size=3,
    )
    | json_values
)
message = st.fixed_dictionaries(
    {"role": roles},
    optional={"content": content, "name": json_values, "tool_calls": json_values, "tool_call_id": json_values,
              "images": json_values, "thinking": json_values},
)  # fmt: skip
known_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | json_values,
        "messages": st.lists(message, max_size=4) | json_values,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=10_000) | json_values,
        "temperature": st.floats(allow_nan=False, allow_infinity=False) | json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "system": st.text(max_size=50) | json_values,
        "prompt": st.text(max_size=50) | json_values,
        "input": st.text(max_size=50) | json_values,
        "options": json_values,
        "stream_options": json_values,
        "response_format": json_values,
        "thinking": json_values,
        "stop": json_values,
        "name": json_values,
        "n": json_values,
        "format": json_values,
        "think": json_values,
        "api_base": st.just("http://127.0.0.1:9/"),
    },
)
bodies = st.builds(
    lambda known, extra: {**extra, **known},
    known_fields,
    st.dictionaries(st.text(max_size=12), json_values, max_size=3),
)


@FUZZ
@given(path=st.sampled_from(POST_PATHS), body=bodies)
def test_structured_bodies_of_any_shape(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    resp = client.post(path, json=body, headers=AUTH)
    assert_well_formed(resp, path)


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS),
    raw=st.binary(max_size=2000)
    | st.sampled_from(
        [b"", b"{", b"[]", b"null", b'"x"', b"{}", b'{"model":', b"\xff\xfe\x00", b"\xef\xbb\xbf{}"]
    ),
    ctype=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "",
            "json",
            "a/b+json",
        ]
    ),
)
def test_raw_bytes_and_content_types(client: httpx.Client, path: str, raw: bytes, ctype: str) -> None:
    headers = {**AUTH, "content-type": ctype} if ctype else AUTH
    assert_well_formed(client.post(path, content=raw, headers=headers), path)


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS),
    body=bodies,
    garbage=st.binary(min_size=1, max_size=8).filter(lambda b: not b.isascii()),
    at=st.floats(min_value=0, max_value=1),
)
def test_invalid_utf8_spliced_into_json(
    client: httpx.Client, path: str, body: dict[str, Any], garbage: bytes, at: float
) -> None:
    encoded = json.dumps(body).encode()
    cut = int(len(encoded) * at)
    spliced = encoded[:cut] + garbage + encoded[cut:]
    resp = client.post(path, content=spliced, headers={**AUTH, "content-type": "application/json"})
    assert_well_formed(resp, path)


@settings(FUZZ, max_examples=int(60 * SCALE))
@given(
    path=st.sampled_from(POST_PATHS),
    depth=st.integers(min_value=1, max_value=3000),
    kind=st.sampled_from("[{m"),
)
def test_deep_nesting(client: httpx.Client, path: str, depth: int, kind: str) -> None:
    if kind == "[":
        nested = b"[" * depth + b"]" * depth
    elif kind == "{":
        nested = b'{"a":' * depth + b"1" + b"}" * depth
    else:
        nested = b'[{"role":"user","content":' + b"[" * depth + b"]" * depth + b"}]"
    raw = b'{"model":"hint:fast","messages":' + nested + b"}"
    assert_well_formed(client.post(path, content=raw, headers=AUTH), path)


@settings(FUZZ, max_examples=int(30 * SCALE))
@given(
    path=st.sampled_from(POST_PATHS),
    size=st.integers(min_value=1_000, max_value=300_000),
    stream=st.booleans(),
)
def test_huge_strings(client: httpx.Client, path: str, size: int, stream: bool) -> None:
    body = {
        "model": "hint:fast",
        "stream": stream,
        "max_tokens": 5,
        "prompt": "p",
        "input": "i",
        "messages": [{"role": "user", "content": "x" * size}],
    }
    assert_well_formed(client.post(path, json=body, headers=AUTH), path)


header_names = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=':()<>@,;\\"/[]?={} '),
    min_size=1,
    max_size=20,
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200).map(
    str.strip
)


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS + GET_PATHS),
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    auth=st.sampled_from(["ok", "none", "dup", "huge", "garbage", "basic", "empty"]),
)
def test_random_duplicate_and_huge_headers(
    client: httpx.Client, path: str, headers: list[tuple[str, str]], auth: str
) -> None:
    sent = [
        (name, value)
        for name, value in headers
        if name.lower() not in ("content-length", "transfer-encoding", "host", "content-type")
    ]
    if auth == "ok":
        sent.append(("Authorization", f"Bearer {KEY}"))
    elif auth == "dup":
        sent += [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer other")]
    elif auth == "huge":
        sent.append(("Authorization", "Bearer " + KEY * 2000))
    elif auth == "garbage":
        sent.append(("Authorization", "\x7f\x01 nonsense"))
    elif auth == "basic":
        sent.append(("Authorization", "Basic Zm9vOmJhcg=="))
    elif auth == "empty":
        sent.append(("Authorization", ""))
    body = {
        "model": "hint:fast",
        "max_tokens": 5,
        "prompt": "p",
        "input": "i",
        "messages": [{"role": "user"}],
    }
    resp = client.get(path, headers=sent) if path in GET_PATHS else client.post(path, json=body, headers=sent)
    assert_well_formed(resp, path)
    if auth in ("none", "dup", "basic", "empty") and path not in ("/healthz", "/status", "/api/version"):
        assert resp.status_code == 401
    if auth == "garbage":  # control characters make the request malformed HTTP, unless the path is public
        assert resp.status_code in (400, 401) or path in ("/healthz", "/status", "/api/version")
    if auth == "huge":
        assert resp.status_code == 431


@settings(FUZZ, max_examples=int(100 * SCALE))
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]),
    path=st.sampled_from(POST_PATHS + GET_PATHS) | st.text(max_size=30).map(lambda s: "/" + s),
)
def test_unknown_methods_and_paths(client: httpx.Client, method: str, path: str) -> None:
    try:
        resp = client.request(method, path, headers=AUTH)
    except httpx.InvalidURL:
        return
    if method != "HEAD":
        assert_well_formed(resp, resp.request.url.path)
    assert resp.status_code != 500


IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
# One rich, valid request per endpoint: the seeds of the mutation fuzzing below.
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "hint:fast",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "user", "content": "and now?"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "max_tokens": 5,
        "temperature": 0.5,
        "stop": ["x"],
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"},
    },
    "/v1/completions": {"model": "hint:fast", "prompt": ["a", "b"], "max_tokens": 5, "stop": "\n"},
    "/v1/embeddings": {"model": "hint:fast", "input": ["a", "b"], "encoding_format": "float"},
    "/v1/messages": {
        "model": "hint:fast",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["x"],
        "metadata": {"user_id": "u"},
    },
    "/api/chat": {
        "model": "hint:fast",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "hi", "images": [IMAGE]},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "r", "tool_name": "f"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "options": {"temperature": 0.1, "num_predict": 5, "stop": ["x"]},
        "format": "json",
        "keep_alive": "5m",
        "think": True,
    },
    "/api/generate": {
        "model": "hint:fast",
        "prompt": "hi",
        "system": "s",
        "images": [IMAGE],
        "options": {"num_predict": 5},
        "format": {"type": "object"},
        "raw": False,
    },
}  # fmt: skip
VALID["/v1/messages/count_tokens"] = VALID["/v1/messages"]
VALID["/api/show"] = {"model": "default"}


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (as a key/index path), the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths_in(child, (*prefix, key)))
    return found


def mutate(value: Any, path: tuple[Any, ...], replacement: Any, delete: bool) -> Any:
    copy = json.loads(json.dumps(value))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return copy


@settings(FUZZ, max_examples=int(400 * SCALE))
@given(
    path=st.sampled_from(sorted(VALID)),
    model=st.sampled_from(["hint:fast", "t:an", "t:ol", "default"]),
    stream=st.sampled_from([None, True, False]),
    data=st.data(),
)
def test_one_mutation_away_from_a_valid_request(
    client: httpx.Client, path: str, model: str, stream: bool | None, data: st.DataObject
) -> None:
    """Valid requests with one value replaced (any type) or removed, at any depth, towards every
    upstream protocol: the translators see wrong types where they expect structure."""
    body = {**VALID[path], "model": model}
    if stream is not None:
        body["stream"] = stream
    where = data.draw(st.sampled_from(paths_in(body)), label="where")
    replacement = data.draw(json_values, label="replacement")
    mutated = mutate(body, where, replacement, data.draw(st.booleans(), label="delete"))
    resp = client.post(path, json=mutated, headers=AUTH)
    assert_well_formed(resp, path)


def test_the_valid_seeds_are_accepted(client: httpx.Client) -> None:
    for path, body in VALID.items():
        for model in ("hint:fast", "t:an", "t:ol"):
            if path == "/api/show":
                continue
            if path in ("/v1/embeddings", "/v1/completions") and model != "hint:fast":
                continue  # those endpoints exist on OpenAI-compatible backends only
            resp = client.post(path, json={**body, "model": model}, headers=AUTH)
            assert resp.status_code == 200, (path, model, resp.text[:300])


def test_the_gateway_survived_the_fuzzing(gw: RunningGateway, client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    body = {"model": "hint:fast", "messages": [{"role": "user", "content": "still here"}]}
    resp = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status_code == 200 and "still here" in resp.text
    assert gw.gateway.traffic.in_flight <= 1
