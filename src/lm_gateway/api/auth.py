"""Client keys and the admin token, compared in constant time.

Every configured key is compared (no early exit on a match), so the time taken does not tell an
attacker how many keys exist or which one came close.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from lm_gateway.http.server import Request, Response, error_response
from lm_gateway.state import GatewayState

CLIENT_REALM = [("www-authenticate", 'Bearer realm="lm-gateway"')]
ADMIN_REALM = [("www-authenticate", 'Bearer realm="lm-gateway admin"')]
# Wrong admin tokens allowed per address and window before that address is locked out of the admin
# API for the rest of the window.
ADMIN_FAILURES = 10
ADMIN_FAILURE_WINDOW_S = 60.0
MAX_ADDRESSES = 4096


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


class FailedAdminAttempts:
    """Wrong admin tokens per client address, in fixed windows.

    Constant-time comparison stops timing attacks, not guessing: without this, a token could be
    guessed at the speed of the network. After :data:`ADMIN_FAILURES` wrong tokens within
    :data:`ADMIN_FAILURE_WINDOW_S`, every admin request from that address gets 429 until the window
    ends (the right token too: an attacker must not learn which guess was right). A missing token is
    not a failure (the dashboard asks for one that way). Addresses are the TCP peer: the admin port
    is not meant to sit behind a proxy.
    """

    __slots__ = ("_clock", "_seen", "limit", "window_s")

    def __init__(
        self,
        limit: int = ADMIN_FAILURES,
        window_s: float = ADMIN_FAILURE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def locked_for(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0 when it is not)."""
        seen = self._seen.get(address)
        if seen is None or seen[1] < self.limit:
            return 0.0
        left = seen[0] + self.window_s - self._clock()
        if left <= 0:
            del self._seen[address]
            return 0.0
        return left

    def failed(self, address: str) -> None:
        now = self._clock()
        start, count = self._seen.get(address, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        if address not in self._seen and len(self._seen) >= MAX_ADDRESSES:
            self._seen.clear()  # a flood of addresses: forget them all rather than grow
        self._seen[address] = (start, count + 1)


def check_admin(
    state: GatewayState, request: Request, attempts: FailedAdminAttempts | None = None
) -> Response | None:
    """None when the admin request may proceed, else the 401 (or, for an address that sent too many
    wrong tokens, the 429) to answer with."""
    if attempts is not None:
        locked = attempts.locked_for(request.peer)
        if locked:
            wait = math.ceil(locked)
            return error_response(
                429,
                f"too many wrong admin tokens from this address; retry after {wait}s",
                type_="rate_limit_error",
                code="admin_locked_out",
                headers=[("retry-after", str(wait))],
            )
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
        if attempts is not None:
            attempts.failed(request.peer)
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
