"""Schema fuzzing: schemathesis against the gateway's own OpenAPI document (``GET
/admin/openapi.json`` on the admin port), every client endpoint, backed by fake upstreams.

Schemathesis builds valid requests from the document and breaks them on purpose (wrong types,
missing fields, boundary values, unexpected methods); its checks then hold the gateway to the
document: no 5xx but the documented upstream ones (502/503/504), every status documented, every
body (errors included, in each protocol's own shape) conforming to its schema, auth enforced where
the document says so, methods answered 405 with ``Allow``.

The document describes the provider APIs (temperature ranges, ``stop`` lists ...), but the gateway
checks only what routing needs and leaves the rest to the upstream, which judges it. So the stock
"invalid data must be rejected" / "valid data must be accepted" checks are replaced by two that know
the gateway's own contract (:func:`contract_problem`): a request that breaks it must get a 4xx, and
one that keeps it must not be refused by the gateway's own validation (an upstream or a translation
may still refuse it). Example counts are bounded so that the CI part stays well within a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core import NOT_SET

from lm_gateway.api.openapi import openapi_document
from lm_gateway.config import load_config_text

from .gateway import (
    RunningGateway,
    config_text,
    three_protocol_config,
    three_protocol_gateway,
)

KEY = "schema-fuzz-client-key-41aa"
ADMIN = "schema-fuzz-admin-token-9bc3"
SCALE = float(os.environ.get("LMG_FUZZ_SCALE", "1"))
EXAMPLES = max(1, int(25 * SCALE))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    env = {"FUZZ_KEY": KEY, "AN_KEY": "sk-ant-schema", "ADMIN": ADMIN}
    extra = 'admin_token_env = "ADMIN"\nhealth_window = 0\n'
    with three_protocol_gateway(tmp_path_factory.mktemp("schema"), extra, env) as gateway:
        yield gateway


def document_for_collection() -> dict[str, Any]:
    """The document the gateway below serves, built before it runs: test collection needs the
    operations (schemathesis' lazy fixture loader does not work with this pytest). Only names go
    into the document, so placeholder backend URLs give the same one; the served document is
    compared with it in :func:`test_the_served_document_is_the_one_fuzzed`."""
    body = three_protocol_config("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    config = load_config_text(config_text(body), env={"FUZZ_KEY": KEY, "AN_KEY": "x"})
    return openapi_document(config)


def contract_problem(path: str, body: Any) -> str | None:
    """What the gateway itself refuses in a request to ``path`` (None: it routes the request)."""
    if path in ("/v1/models", "/api/tags", "/api/version", "/healthz", "/status"):
        return None
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    model = body.get("model", None)
    if path.startswith("/api/"):
        name = model if path != "/api/show" or model is not None else body.get("name")
        return None if isinstance(name, str) and name else "model must be a non-empty string"
    if path.startswith("/v1/messages"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty array"
        return None if isinstance(model, str) else "model must be a string"
    if model is not None and (not isinstance(model, str) or not model):
        return "model must be a non-empty string"
    if path != "/v1/chat/completions":
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "every message must be an object with a string role"
    stream = body.get("stream")
    return None if stream is None or isinstance(stream, bool) else "stream must be a boolean"


# The gateway's own validation refusals, by OpenAI code or by message (the other protocols' shapes
# carry no code); an upstream's or a translation's refusal is none of these.
VALIDATION_CODES = {"invalid_json", "invalid_messages", "invalid_stream", "invalid_model", "json_too_deep",
                    "too_many_messages", "unsupported_media_type"}  # fmt: skip
VALIDATION_MESSAGES = ("messages: must be", "model: must be", "model is required", "request body",
                       "'messages' must", "'stream' must", "'model' must", "invalid request:")  # fmt: skip


def refused_by_validation(response: Any) -> bool:
    if response.status_code not in (400, 415):
        return False
    try:
        payload = response.json()
    except ValueError:
        return True
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("code") in VALIDATION_CODES:
        return True
    message = error.get("message") if isinstance(error, dict) else error
    return isinstance(message, str) and message.startswith(VALIDATION_MESSAGES)


def body_of(case: Any) -> Any:
    body = case.body
    return None if body is NOT_SET else body


JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")


def sent_as_json(response: Any) -> bool:
    ctype = str(response.request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return not ctype or ctype in JSON_TYPES or ctype.endswith("+json")


def gateway_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request that breaks the gateway's contract is refused with a 4xx; a request that is valid by
    the document is not refused by the gateway's own validation."""
    if case.operation.method.upper() != case.method.upper():
        return None  # unsupported_method covers those
    problem = contract_problem(case.operation.path, body_of(case))
    if problem is None and case.operation.method.upper() == "POST" and not sent_as_json(response):
        problem = "the body is not declared as JSON"
    status = response.status_code
    if problem is not None:
        assert 400 <= status < 500, f"{status} for a request the gateway must refuse ({problem})"
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    if problem is None and mode is not None and mode.is_positive:
        assert not refused_by_validation(response), f"a valid request was refused: {response.text[:300]}"
    return None


def no_traceback(ctx: Any, response: Any, case: Any) -> bool | None:
    assert "Traceback" not in response.text and response.status_code != 500
    return None


schema = schemathesis.openapi.from_dict(
    document_for_collection(),
    config=schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {KEY}"},
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "checks": {
                # A 500 is always a bug; 502/503/504 are the documented upstream failures.
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502", "503", "504"]},
                # Replaced by gateway_contract (see the module docstring).
                "negative_data_rejection": {"enabled": False},
                "positive_data_acceptance": {"enabled": False},
            },
        }
    ),
)


@pytest.fixture(scope="module")
def client_url(gw: RunningGateway) -> str:
    return gw.url


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES)
def test_every_client_endpoint_conforms_to_the_document(case: Any, client_url: str) -> None:
    case.call_and_validate(
        base_url=client_url, timeout=15, additional_checks=[gateway_contract, no_traceback]
    )


def test_the_served_document_is_the_one_fuzzed(gw: RunningGateway) -> None:
    served = httpx.get(gw.admin_url + "/admin/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"})
    assert served.json() == document_for_collection()


def test_the_document_is_served_behind_the_admin_token(gw: RunningGateway) -> None:
    url = gw.admin_url + "/admin/openapi.json"
    assert httpx.get(url).status_code == 401
    cross_site = {"Authorization": f"Bearer {ADMIN}", "Sec-Fetch-Site": "cross-site"}
    assert httpx.get(url, headers=cross_site).status_code == 403
    document = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert document["openapi"].startswith("3.")
    paths = set(document["paths"])
    assert paths == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/api/chat",
        "/api/generate",
        "/api/tags",
        "/api/show",
        "/api/version",
        "/healthz",
        "/status",
    }
    models = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"]
    assert {"hint:fast", "t:an", "default"} <= set(models)
    text = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN}"}).text
    for secret in (KEY, ADMIN, "sk-ant-schema", "127.0.0.1"):
        assert secret not in text
