"""HTTP helpers shared by the client and admin handlers: bodies, errors, request ids."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from typing import Any

import orjson

from lm_gateway.http.server import Request, Response, error_response, json_response

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)
_JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")


def stream_headers(content_type: str) -> list[tuple[str, str]]:
    """Headers of a streamed answer; ``x-accel-buffering: no`` stops nginx from holding chunks back."""
    return [("content-type", content_type), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-shaped error body."""
    try:
        return str(orjson.loads(body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def reshaped_error(response: Response, payload: Callable[[int, str], Any]) -> Response:
    """An error the shared layer shaped for OpenAI clients, in another protocol's shape (its other
    headers, such as ``WWW-Authenticate`` and the request id, kept)."""
    message = error_message(response.body) or "request refused"
    headers = [(name, value) for name, value in response.headers if name != "content-type"]
    return json_response(response.status, payload(response.status, message), headers)


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def request_id(request: Request) -> str:
    """The client's ``X-Request-ID`` when it is sane (bounded, no odd characters), else a new one.

    New ids are a per-process random prefix plus a counter: unique within the process and far
    cheaper than a UUID per request.
    """
    given = request.headers.get("x-request-id")
    if given is not None and _REQUEST_ID_OK.fullmatch(given):
        return given
    return f"lmg-{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class BodyLimits:
    """What a client's JSON body may be (``gateway.max_json_depth`` and ``gateway.max_messages``)."""

    __slots__ = ("max_depth", "max_messages")

    def __init__(self, max_depth: int = 64, max_messages: int = 10_000) -> None:
        self.max_depth = max_depth
        self.max_messages = max_messages


DEFAULT_BODY_LIMITS = BodyLimits()

# Request fields that, in some gateway or SDK, choose where a request goes or which credentials it
# carries (LiteLLM's ``api_base`` SSRF, CVE-2024-6587, and its variants). This gateway never reads
# them: its upstream URL and credentials come from the config only. They are dropped from every
# client body anyway, so that they cannot reach an upstream that would honour them (a gateway
# behind this one). Matched case-insensitively on the body's top level.
UPSTREAM_FIELDS = frozenset(
    {
        "api_base",
        "api_key",
        "api_type",
        "api_url",
        "api_version",
        "azure_ad_token",
        "base_url",
        "custom_llm_provider",
        "default_headers",
        "deployment_id",
        "extra_body",
        "extra_headers",
        "extra_query",
        "headers",
        "http_client",
        "model_list",
        "organization",
        "proxies",
        "proxy",
        "user_config",
    }
)
UPSTREAM_FIELD_PREFIXES = ("aws_", "azure_", "vertex_", "vertexai_", "litellm_", "gcp_", "google_")


def is_upstream_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in UPSTREAM_FIELDS or lowered.startswith(UPSTREAM_FIELD_PREFIXES)


# The verdict for field names already seen (requests use the same few dozen); bounded.
_FIELD_VERDICTS: dict[str, bool] = {}
_MAX_VERDICTS = 4096


def drop_upstream_fields(body: dict[str, Any]) -> tuple[str, ...]:
    """Remove :data:`UPSTREAM_FIELDS` (and the vendor prefixes) from ``body``; the names removed."""
    verdicts = _FIELD_VERDICTS
    dropped: list[str] | None = None
    for name in body:
        steering = verdicts.get(name)
        if steering is None:
            if len(verdicts) >= _MAX_VERDICTS:
                verdicts.clear()
            steering = verdicts[name] = is_upstream_field(name)
        if steering:
            if dropped is None:
                dropped = []
            dropped.append(name)
    if dropped is None:
        return ()
    for name in dropped:
        del body[name]
    return tuple(dropped)


# Every byte but JSON's brackets and quotes, to delete; and { } read as [ ].
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether valid JSON text nests objects and arrays more than ``limit`` deep.

    Done on the bytes with C-speed bytes operations (a fraction of the parse itself) rather than by
    walking the parsed value, which costs more than parsing a large conversation: drop the escapes
    that could hide a quote (``\\\\`` and ``\\"``), keep only brackets and quotes, drop what is
    inside strings (adjacent quotes first: an empty string, or the end of one string and the start
    of the next), then strip innermost ``[]`` pairs, one nesting level per pass.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = raw.translate(_ONE_BRACKET, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _may_be_too_deep(raw: bytes, limit: int) -> bool:
    """A cheap first look: a body cannot nest deeper than it has opening brackets (counted only in
    small bodies, where counting costs less than it saves)."""
    if len(raw) <= 2 * limit:
        return False
    return len(raw) > 16384 or raw.count(b"[") + raw.count(b"{") > limit


def parse_json_object(request: Request, limits: BodyLimits = DEFAULT_BODY_LIMITS) -> dict[str, Any]:
    """The body as a JSON object, or :class:`BadRequest` with a clear 4xx.

    ``curl -d`` sends ``application/x-www-form-urlencoded`` by default, so that type (and a missing
    one) is accepted when the body is JSON; any other declared type is refused with 415. Bodies nested
    deeper than ``limits.max_depth`` or with more than ``limits.max_messages`` messages are refused
    with 400, and fields that could steer an upstream (:data:`UPSTREAM_FIELDS`) are dropped.
    """
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise BadRequest(
            error_response(
                415, f"expected a JSON body, got content-type '{ctype[:80]}'", code="unsupported_media_type"
            )
        )
    if not request.body:
        raise BadRequest(
            error_response(400, "request body is empty; expected a JSON object", code="invalid_json")
        )
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        code = "json_too_deep" if "depth limit" in exc.msg else "invalid_json"
        raise BadRequest(
            error_response(400, f"request body is not valid JSON: {exc.msg}", code=code)
        ) from exc
    if not isinstance(payload, dict):
        raise BadRequest(error_response(400, "request body must be a JSON object", code="invalid_json"))
    _check_shape(request.body, payload, limits)
    drop_upstream_fields(payload)
    return payload


def _check_shape(raw: bytes, payload: dict[str, Any], limits: BodyLimits) -> None:
    if _may_be_too_deep(raw, limits.max_depth) and json_depth_exceeds(raw, limits.max_depth):
        raise BadRequest(
            error_response(
                400, f"request body nests deeper than {limits.max_depth} levels", code="json_too_deep"
            )
        )
    messages = payload.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise BadRequest(
            error_response(
                400,
                f"request has {len(messages)} messages; at most {limits.max_messages} are accepted",
                code="too_many_messages",
            )
        )


def check_chat_body(body: dict[str, Any]) -> None:
    """Just enough validation for routing to be safe; everything else is the upstream's to judge."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(error_response(400, "'messages' must be a non-empty array", code="invalid_messages"))
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                error_response(
                    400, f"messages[{index}] must be an object with a string 'role'", code="invalid_messages"
                )
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(error_response(400, "'stream' must be a boolean", code="invalid_stream"))


def query_params(query: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query, keep_blank_values=True))
