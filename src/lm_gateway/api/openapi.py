"""The OpenAPI 3.0 document of the client port, served on the admin port (``GET /admin/openapi.json``).

It describes every client endpoint (OpenAI, Anthropic and Ollama flavours, ``/healthz``, ``/status``)
with request schemas precise enough for a schema fuzzer (schemathesis) to build valid requests and
break them on purpose, and every error each endpoint can answer, in that protocol's own shape. The
test suite runs schemathesis against a live gateway with it (``tests/test_fuzz_schemathesis.py``).

The document is built from the running config, so that ``model`` is an ``enum`` of the names the
gateway routes (tiers, aliases, profiles) and the bearer scheme appears only when ``[[clients]]``
exist. That makes it setup-specific, so it is served behind the admin token like the rest of the
admin API. It never contains a secret, a backend URL or a client name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from lm_gateway import __version__
from lm_gateway.api.auth import check_admin
from lm_gateway.http.server import Request, Response, StreamResponse, error_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lm_gateway.config.schema import Config
    from lm_gateway.server import Gateway
    from lm_gateway.state import GatewayState

    Handler = Callable[[Request], Awaitable[Response | StreamResponse]]

PATH = "/admin/openapi.json"
JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
Schema = dict[str, Any]

# Errors every routed endpoint may answer (besides 400, 401 and 429, which each protocol lists).
UPSTREAM_ERRORS = {
    "403": "the key's profile does not allow the requested one, the expert gate, or a cost ceiling",
    "404": "unknown model (the message lists the valid names)",
    "413": "request body larger than max_body_bytes",
    "415": "the body is declared as something other than JSON",
    "502": "the backend is unreachable, refused the gateway's credential or answered garbage",
    "503": "the backend is overloaded (HTTP 503/529) or its circuit is open",
    "504": "the backend did not answer in time",
}


def serve_openapi(gateway: Gateway, handler: Handler) -> Handler:
    """Wrap the admin port's handler so that it also answers ``GET /admin/openapi.json`` (behind the
    admin token, like every admin endpoint that depends on the config)."""
    cache: dict[str, Any] = {}

    async def handle(request: Request) -> Response | StreamResponse:
        if request.path != PATH or request.method not in ("GET", "HEAD"):
            return await handler(request)
        if request.headers.get("sec-fetch-site") == "cross-site":
            return error_response(403, "cross-site admin requests are refused", code="cross_site")
        state = gateway.state
        denied = check_admin(state, request, gateway.admin_attempts)
        if denied is not None:
            return denied
        headers = [("content-type", JSON), ("cache-control", "no-store")]
        return Response(200, _document_bytes(state, cache), headers)

    return handle


def _document_bytes(state: GatewayState, cache: dict[str, Any]) -> bytes:
    """The document of ``state``'s config, built once per config (a reload makes a new one)."""
    if cache.get("state") is not state:
        cache["state"] = state
        cache["bytes"] = orjson.dumps(openapi_document(state.config))
    body: bytes = cache["bytes"]
    return body


def openapi_document(config: Config) -> Schema:
    models = sorted({*(tier.name for tier in config.tiers), *config.aliases, *config.profiles})
    keyed = bool(config.clients)
    paths = {
        **_openai_paths(keyed),
        **_anthropic_paths(keyed),
        **_ollama_paths(keyed),
        **_public_paths(),
    }
    document: Schema = {
        "openapi": "3.0.3",
        "info": {
            "title": "lm-gateway client API",
            "version": __version__,
            "description": (
                "OpenAI-, Anthropic- and Ollama-compatible endpoints of one lm-gateway. Request fields "
                "that could steer an upstream (api_base, base_url, api_key, extra_headers, ...) are "
                "dropped; client headers are never forwarded upstream."
            ),
        },
        "paths": paths,
        "components": {"schemas": _components(models)},
    }
    if keyed:
        document["components"]["securitySchemes"] = {
            "clientKey": {"type": "http", "scheme": "bearer", "description": "a [[clients]] key"}
        }
        document["security"] = [{"clientKey": []}]
    return document


# -- building blocks -------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def _body(name: str) -> Schema:
    return {"required": True, "content": _json(_ref(name))}


def _errors(shape: str, statuses: dict[str, str], keyed: bool) -> Schema:
    """Error responses in one protocol's shape (``shape`` names its component schema)."""
    described = {"400": "malformed request", **statuses}
    if keyed:
        described["401"] = "missing or invalid client key"
    described["429"] = "a rate limit (Retry-After and X-RateLimit-* headers) or an upstream 429"
    responses: Schema = {}
    for status, text in sorted(described.items()):
        response: Schema = {"description": text, "content": _json(_ref(shape))}
        if status == "429":
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        responses[status] = response
    return responses


def _operation(
    summary: str,
    ok: Schema,
    errors: Schema,
    *,
    body: str | None = None,
    public: bool = False,
) -> Schema:
    operation: Schema = {"summary": summary, "responses": {"200": ok, **errors}}
    if body is not None:
        operation["requestBody"] = _body(body)
    if public:
        operation["security"] = []
    return operation


def _ok(description: str, schema: Schema, stream_type: str | None = None) -> Schema:
    content = _json(schema)
    if stream_type == SSE:
        # One server-sent event (its `data` is the protocol's JSON chunk, or [DONE]).
        event = _object({"data": {"type": "string"}, "event": {"type": "string"}}, ("data",))
        content[SSE] = {"schema": event}
    elif stream_type == NDJSON:
        content[NDJSON] = {"schema": {"type": "object"}}  # one JSON object per line
    return {"description": description, "content": content}


def _routed_errors(shape: str, keyed: bool) -> Schema:
    return _errors(shape, UPSTREAM_ERRORS, keyed)


def _simple_errors(shape: str, keyed: bool) -> Schema:
    return _errors(shape, {"413": UPSTREAM_ERRORS["413"], "415": UPSTREAM_ERRORS["415"]}, keyed)


def _list_errors(shape: str, keyed: bool) -> Schema:
    """A GET that only authenticates: 401 (with keys) and 429."""
    errors = _errors(shape, {}, keyed)
    errors.pop("400")
    return errors


# -- the endpoints ---------------------------------------------------------------------------------


def _openai_paths(keyed: bool) -> Schema:
    routed = _routed_errors("OpenAIError", keyed)
    return {
        "/v1/chat/completions": {
            "post": _operation(
                "OpenAI chat completions (SSE when stream is true)",
                _ok("a chat completion", _ref("ChatCompletion"), SSE),
                routed,
                body="ChatCompletionRequest",
            )
        },
        "/v1/completions": {
            "post": _operation(
                "OpenAI legacy text completions",
                _ok("a text completion", _ref("TextCompletion"), SSE),
                routed,
                body="CompletionRequest",
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "OpenAI embeddings",
                _ok("embedding vectors", _ref("EmbeddingList")),
                routed,
                body="EmbeddingRequest",
            )
        },
        "/v1/models": {
            "get": _operation(
                "tiers, aliases and profiles",
                _ok("the model list", _ref("ModelList")),
                _list_errors("OpenAIError", keyed),
            )
        },
    }


def _anthropic_paths(keyed: bool) -> Schema:
    return {
        "/v1/messages": {
            "post": _operation(
                "Anthropic Messages (SSE when stream is true)",
                _ok("a message", _ref("AnthropicMessage"), SSE),
                _routed_errors("AnthropicError", keyed),
                body="MessagesRequest",
            )
        },
        "/v1/messages/count_tokens": {
            "post": _operation(
                "an input-token estimate (no backend call)",
                _ok("the estimate", _ref("TokenCount")),
                _simple_errors("AnthropicError", keyed),
                body="MessagesRequest",
            )
        },
    }


def _ollama_paths(keyed: bool) -> Schema:
    routed = _routed_errors("OllamaError", keyed)
    return {
        "/api/chat": {
            "post": _operation(
                "Ollama chat (NDJSON unless stream is false)",
                _ok("a chat answer", _ref("OllamaChatResponse"), NDJSON),
                routed,
                body="OllamaChatRequest",
            )
        },
        "/api/generate": {
            "post": _operation(
                "Ollama generate (NDJSON unless stream is false)",
                _ok("a generated answer", _ref("OllamaGenerateResponse"), NDJSON),
                routed,
                body="OllamaGenerateRequest",
            )
        },
        "/api/tags": {
            "get": _operation(
                "the models Ollama clients see",
                _ok("the model list", _ref("OllamaTags")),
                _list_errors("OllamaError", keyed),
            )
        },
        "/api/show": {
            "post": _operation(
                "details of a listed model",
                _ok("model details", _ref("OllamaShow")),
                {
                    **_simple_errors("OllamaError", keyed),
                    "404": {"description": "not a listed model", "content": _json(_ref("OllamaError"))},
                },
                body="OllamaShowRequest",
            )
        },
        "/api/version": {
            "get": _operation(
                "the Ollama version the gateway answers as",
                _ok("the version", _object({"version": {"type": "string"}})),
                _list_errors("OllamaError", False),
                public=True,
            )
        },
    }


def _public_paths() -> Schema:
    health = _ok("alive", _object({"status": {"type": "string", "enum": ["ok"]}}))
    status = _ok(
        "liveness and counters",
        _object(
            {
                "status": {"type": "string"},
                "ready": {"type": "boolean"},
                "uptime_secs": {"type": "integer"},
                "requests": {"type": "object"},
            }
        ),
    )
    return {
        "/healthz": {"get": {"summary": "liveness", "security": [], "responses": {"200": health}}},
        "/status": {"get": {"summary": "public counters", "security": [], "responses": {"200": status}}},
    }


# -- schemas ---------------------------------------------------------------------------------------


def _object(properties: Schema, required: tuple[str, ...] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    wanted = list(required if required is not None else properties)
    if wanted:
        schema["required"] = wanted
    return schema


def _text(max_length: int = 2000, min_length: int = 0) -> Schema:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def _components(models: list[str]) -> Schema:
    model: Schema = {"type": "string", "enum": models} if models else {"type": "string"}
    return {
        **_error_schemas(),
        **_openai_schemas(model),
        **_anthropic_schemas(model),
        **_ollama_schemas(model),
    }


def _error_schemas() -> Schema:
    nullable = {"type": "string", "nullable": True}
    return {
        "OpenAIError": _object(
            {
                "error": _object(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": nullable,
                        "code": nullable,
                    }
                )
            }
        ),
        "AnthropicError": _object(
            {
                "type": {"type": "string", "enum": ["error"]},
                "error": _object({"type": {"type": "string"}, "message": {"type": "string"}}),
            }
        ),
        "OllamaError": _object({"error": {"type": "string"}}),
    }


def _openai_schemas(model: Schema) -> Schema:
    part = _object({"type": {"type": "string", "enum": ["text"]}, "text": _text()})
    content: Schema = {"oneOf": [_text(), {"type": "array", "items": part, "minItems": 1, "maxItems": 4}]}
    message = _object(
        {"role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]}, "content": content}
    )
    sampling: Schema = {
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "user": _text(64),
    }
    prompt: Schema = {"oneOf": [_text(), {"type": "array", "items": _text(), "minItems": 1, "maxItems": 4}]}
    return {
        "ChatCompletionRequest": _object(
            {
                "model": model,
                "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": 16},
                **sampling,
                "stop": {"oneOf": [_text(16), {"type": "array", "items": _text(16), "maxItems": 4}]},
            },
            ("messages",),
        ),
        # Without `model`, the profile's default hint is used (as in lm-gateway-rs).
        "CompletionRequest": _object({"model": model, "prompt": prompt, **sampling}, ("prompt",)),
        "EmbeddingRequest": _object({"model": model, "input": prompt}, ("input",)),
        "ChatCompletion": _object({"object": {"type": "string"}, "choices": {"type": "array"}}, ("choices",)),
        "TextCompletion": _object({"choices": {"type": "array"}}),
        "EmbeddingList": _object({"data": {"type": "array"}}),
        "ModelList": _object(
            {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": _object({"id": {"type": "string"}}, ("id",))},
            }
        ),
    }


def _anthropic_schemas(model: Schema) -> Schema:
    block = _object({"type": {"type": "string", "enum": ["text"]}, "text": _text(min_length=1)})
    content: Schema = {"oneOf": [_text(min_length=1), {"type": "array", "items": block, "minItems": 1}]}
    message = _object({"role": {"type": "string", "enum": ["user", "assistant"]}, "content": content})
    return {
        "MessagesRequest": _object(
            {
                "model": model,
                "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": 16},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
                "system": _text(),
                "stream": {"type": "boolean"},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            },
            ("model", "messages", "max_tokens"),
        ),
        "AnthropicMessage": _object(
            {
                "type": {"type": "string", "enum": ["message"]},
                "role": {"type": "string", "enum": ["assistant"]},
                "content": {"type": "array"},
            }
        ),
        "TokenCount": _object({"input_tokens": {"type": "integer", "minimum": 0}}),
    }


def _ollama_schemas(model: Schema) -> Schema:
    call = _object({"function": _object({"name": {"type": "string"}, "arguments": {"type": "object"}})}, ())
    message = _object(
        {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]},
            "content": _text(),
            "tool_calls": {"type": "array", "items": call, "maxItems": 4},
        },
        ("role", "content"),
    )
    return {
        "OllamaChatRequest": _object(
            {
                "model": model,
                "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": 16},
                "stream": {"type": "boolean"},
                "options": _object({"temperature": {"type": "number", "minimum": 0, "maximum": 2}}, ()),
            },
            ("model", "messages"),
        ),
        "OllamaGenerateRequest": _object(
            {"model": model, "prompt": _text(), "system": _text(), "stream": {"type": "boolean"}},
            ("model", "prompt"),
        ),
        "OllamaShowRequest": _object({"model": model}),
        "OllamaChatResponse": _object(
            {"model": {"type": "string"}, "message": {"type": "object"}, "done": {"type": "boolean"}}
        ),
        "OllamaGenerateResponse": _object(
            {"model": {"type": "string"}, "response": {"type": "string"}, "done": {"type": "boolean"}}
        ),
        "OllamaTags": _object(
            {"models": {"type": "array", "items": _object({"name": {"type": "string"}}, ())}}
        ),
        "OllamaShow": _object({"details": {"type": "object"}}, ()),
    }
