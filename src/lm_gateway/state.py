"""The running state derived from one config: routing table, backend adapters, credentials.

A request reads ``gateway.state`` once and uses that snapshot to the end, so a reload (which builds a
new :class:`GatewayState` and swaps one reference) never changes a request half-way. Backend adapters
whose settings did not change are carried over, so their connection pools survive a reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_gateway.backends import Backend, build_backend
from lm_gateway.config.schema import ClientConfig, Config
from lm_gateway.router import RoutingTable, build_table


@dataclass(frozen=True, slots=True)
class ClientKey:
    key: bytes
    client: ClientConfig


@dataclass(frozen=True, slots=True)
class GatewayState:
    config: Config
    table: RoutingTable
    backends: dict[str, Backend]
    client_keys: tuple[ClientKey, ...]
    # Clients are configured but none of their keys resolved: refuse everything rather than run open.
    clients_locked: bool
    admin_token: bytes | None
    # An admin token variable is named but empty: refuse the admin API rather than run it open.
    admin_locked: bool

    @property
    def auth_required(self) -> bool:
        return bool(self.config.clients)


def build_state(config: Config, previous: GatewayState | None = None) -> tuple[GatewayState, list[Backend]]:
    """Build the state for ``config``; also return the previous adapters that are no longer used."""
    reused = previous.backends if previous is not None else {}
    backends: dict[str, Backend] = {}
    for name, backend_config in config.backends.items():
        key = config.backend_keys.get(name)
        old = reused.get(name)
        if old is not None and old.config == backend_config and old.same_key(key):
            backends[name] = old
        else:
            backends[name] = build_backend(backend_config, key)
    retired = [b for name, b in reused.items() if backends.get(name) is not b]
    client_keys = tuple(ClientKey(secret.reveal().encode(), client) for client, secret in config.client_keys)
    token = config.admin_token.reveal().encode() if config.admin_token is not None else None
    state = GatewayState(
        config=config,
        table=build_table(config),
        backends=backends,
        client_keys=client_keys,
        clients_locked=bool(config.clients) and not client_keys,
        admin_token=token,
        admin_locked=bool(config.gateway.admin_token_env) and token is None,
    )
    return state, retired
