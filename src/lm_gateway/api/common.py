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


def parse_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or :class:`BadRequest` with a clear 4xx.

    ``curl -d`` sends ``application/x-www-form-urlencoded`` by default, so that type (and a missing
    one) is accepted when the body is JSON; any other declared type is refused with 415.
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
        raise BadRequest(
            error_response(400, f"request body is not valid JSON: {exc.msg}", code="invalid_json")
        ) from exc
    if not isinstance(payload, dict):
        raise BadRequest(error_response(400, "request body must be a JSON object", code="invalid_json"))
    return payload


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
