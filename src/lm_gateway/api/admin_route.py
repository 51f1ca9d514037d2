"""``POST /admin/route``: how the gateway would route a request, without answering it.

For debugging a config: send a chat request body exactly as a client would; the answer is the routing
decision (profile, mode, tier, model, backend, class label, every step with its reason, the
``X-LMG-Route`` header it would carry, the system prompt it would get). The tier that would answer is
never called; a classify profile does call its classifier (that is the decision being debugged), and
the cost of that call is reported.

Query parameters stand in for what a client's request would carry: ``profile`` (the profile its key
is bound to), ``client`` (the ``[[clients]]`` name, for extra profiles and escalation budgets),
``expert=true`` (the expert flag), ``stream=true`` and ``priority``. A request the gateway would refuse
is still a 200 here, with ``refused`` holding the status and error the client would get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_gateway.api.common import BadRequest, check_chat_body, parse_json_object, query_params
from lm_gateway.backends import BackendError
from lm_gateway.http.server import Request, Response, error_response, json_response
from lm_gateway.router import RoutingError, explain

if TYPE_CHECKING:
    from lm_gateway.server import Gateway

_TRUE = ("1", "true", "yes", "on")


async def route_endpoint(gateway: Gateway, request: Request) -> Response:
    try:
        body = parse_json_object(request)
        check_chat_body(body)
    except BadRequest as bad:
        return bad.response
    params = query_params(request.query)
    state = gateway.state
    profile = params.get("profile") or None
    client = params.get("client") or None
    if profile is not None and profile not in state.config.profiles:
        return error_response(404, f"unknown profile '{profile[:100]}'", code="profile_not_found")
    if client is not None:
        entry = state.table.clients.get(client)
        if entry is None:
            return error_response(404, f"unknown client '{client[:100]}'", code="client_not_found")
        profile = profile or entry.profile
    priority = params.get("priority", "0")
    if not priority.lstrip("-").isdigit():
        return error_response(400, "'priority' must be an integer", code="invalid_priority")
    try:
        decision = await explain(
            state.table,
            state.backends,
            body,
            bound_profile=profile,
            expert=params.get("expert", "").lower() in _TRUE,
            client=client,
            priority=int(priority),
            stream=params.get("stream", "").lower() in _TRUE or body.get("stream") is True,
        )
    except (RoutingError, BackendError) as err:
        return json_response(200, _refusal(err))
    return json_response(200, decision)


def _refusal(err: RoutingError | BackendError) -> dict[str, Any]:
    return {
        "refused": {
            "status": err.status,
            "error": {"message": err.message, "type": err.type, "code": err.code},
        }
    }
