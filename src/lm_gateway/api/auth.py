"""Client keys and the admin token, compared in constant time.

Every configured key is compared (no early exit on a match), so the time taken does not tell an
attacker how many keys exist or which one came close.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from lm_gateway.http.server import Request, Response, error_response
from lm_gateway.state import GatewayState

CLIENT_REALM = [("www-authenticate", 'Bearer realm="lm-gateway"')]
ADMIN_REALM = [("www-authenticate", 'Bearer realm="lm-gateway admin"')]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the key's name (never its value) or the peer address, and its bound profile."""

    name: str
    profile: str | None
    # True when a [[clients]] key matched (its entry's extra profiles and budgets then apply).
    keyed: bool = False


def bearer_token(request: Request, *, allow_x_api_key: bool = False) -> str | None:
    value = request.headers.get("authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    if allow_x_api_key:
        return request.headers.get("x-api-key")
    return None


def authenticate_client(state: GatewayState, request: Request) -> Identity | Response:
    if not state.auth_required:
        return Identity(request.peer, None)
    if "authorization" in request.duplicate_headers:
        return _client_401("several Authorization headers were sent; send exactly one")
    if state.clients_locked:
        return _client_401(
            "client keys are configured but none is set on the gateway; all requests are refused"
        )
    token = bearer_token(request, allow_x_api_key=True)
    matched = None
    if token is not None:
        presented = token.encode("utf-8", "surrogateescape")
        for entry in state.client_keys:
            if hmac.compare_digest(presented, entry.key) and matched is None:
                matched = entry.client
    if matched is not None:
        return Identity(matched.display_name, matched.profile, keyed=True)
    public = state.config.gateway.public_profile
    if public:
        return Identity(request.peer, public)
    if token is None:
        return _client_401("a client key is required: send 'Authorization: Bearer <key>'")
    return _client_401("the client key is not valid")


def check_admin(state: GatewayState, request: Request) -> Response | None:
    """None when the admin request may proceed, else the 401 to answer with."""
    if state.admin_locked:
        return error_response(
            401,
            "the admin token variable is configured but empty; the admin API is locked",
            type_="authentication_error",
            code="admin_locked",
            headers=ADMIN_REALM,
        )
    if state.admin_token is None:
        return None
    token = bearer_token(request)
    if token is None or "authorization" in request.duplicate_headers:
        return error_response(
            401,
            "the admin API requires 'Authorization: Bearer <token>'",
            type_="authentication_error",
            code="admin_token_required",
            headers=ADMIN_REALM,
        )
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), state.admin_token):
        return error_response(
            401,
            "the admin token is not valid",
            type_="authentication_error",
            code="invalid_admin_token",
            headers=ADMIN_REALM,
        )
    return None


def _client_401(message: str) -> Response:
    return error_response(
        401, message, type_="authentication_error", code="invalid_api_key", headers=CLIENT_REALM
    )
