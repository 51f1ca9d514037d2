"""The config as the admin API shows it (``GET /admin/config``): everything but secrets.

Built from an allow-list of what each section shows rather than by dumping the dataclasses, so a
secret-bearing field added later stays hidden until someone decides to show it. Secret *sources*
(env var names, file paths) are shown, because they are what an operator needs to fix a missing key;
secret values never are. Credentials in a URL's userinfo are masked even though validation rejects
them, in case a view is ever built from an unvalidated config.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lm_gateway.config.schema import BackendConfig, ClientConfig, Config, ProfileConfig

_MASK = "***"
_SENSITIVE_OPTION = re.compile(r"key|token|secret|password|auth", re.IGNORECASE)
_USERINFO = re.compile(r"(//)[^/?#@]*@")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(rf"\g<1>{_MASK}@", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{_MASK}@{host}"))


def _plain(value: Any) -> Any:
    """Make a TOML-derived value JSON-serialisable (dates become ISO strings)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Nested profile settings (sufficiency, pre_router rules): secret-free by construction.
        return {spec.name: _plain(getattr(value, spec.name)) for spec in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def _options(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``default_options`` with anything that looks like a credential masked."""
    if options is None:
        return None
    return {key: _MASK if _SENSITIVE_OPTION.search(key) else _plain(value) for key, value in options.items()}


def _backend_view(backend: BackendConfig, config: Config) -> dict[str, Any]:
    source = backend.key_source
    kind = source.source if source is not None and source.source in ("env", "file") else None
    return {
        "name": backend.name,
        "provider": backend.provider.value,
        "base_url": redact_url(backend.base_url),
        # has_api_key: a key source is configured (the lm-gateway-rs meaning); api_key_present: it
        # resolved to a value at load time.
        "has_api_key": source is not None,
        "api_key_present": backend.name in config.backend_keys,
        "api_key_source": kind,
        "api_key_env": source.var if source is not None and kind == "env" else None,
        "api_key_file": source.path if source is not None and kind == "file" else None,
        "timeout_ms": backend.timeout_ms,
        "connect_timeout_ms": backend.connect_timeout_ms,
        "max_connections": backend.max_connections,
        "default_options": _options(backend.default_options),
    } | _gate_view(backend)


def _gate_view(backend: BackendConfig) -> dict[str, Any]:
    """The priority gate's settings, shown only for a backend that has one."""
    if backend.max_concurrent is None:
        return {}
    return {"max_concurrent": backend.max_concurrent, "queue_limit": backend.queue_limit}


def _profile_view(profile: ProfileConfig) -> dict[str, Any]:
    view = {spec.name: _plain(getattr(profile, spec.name)) for spec in dataclasses.fields(profile)}
    view["mode"] = profile.mode.value
    view["rules"] = [
        {"when": dict(rule.when), "route_to": rule.route_to, "priority": rule.priority}
        for rule in profile.rules
    ]
    return view


def _client_view(client: ClientConfig, config: Config) -> dict[str, Any]:
    present = any(resolved is client for resolved, _secret in config.client_keys)
    return {
        "name": client.display_name,
        "key_env": client.key_env,
        "profile": client.profile,
        "key_present": present,
    } | _client_routing_view(client)


def _client_routing_view(client: ClientConfig) -> dict[str, Any]:
    """A client's extra profiles, escalation budget and limits, shown only when set."""
    view: dict[str, Any] = {}
    if client.profiles:
        view["profiles"] = list(client.profiles)
    for key in (
        "max_escalations_per_minute",
        "rate_limit_rpm",
        "max_concurrent_streams",
        "max_spend_usd_per_day",
    ):
        value = getattr(client, key)
        if value is not None:
            view[key] = value
    return view


def redacted_view(config: Config) -> dict[str, Any]:
    """Plain, JSON-serialisable data describing ``config`` with no secret values.

    Shape: ``gateway`` (every field), ``backends`` (list), ``tiers`` (list), ``aliases`` (map),
    ``profiles`` (map name → every field, as lm-gateway-rs keys it), ``clients`` (list), plus
    ``source``, ``warnings``, ``missing_secrets``, ``admin_token_present`` and ``redis_url_present``.
    """
    gateway = {
        spec.name: _plain(getattr(config.gateway, spec.name)) for spec in dataclasses.fields(config.gateway)
    }
    return {
        "source": config.source,
        "gateway": gateway,
        "admin_token_present": config.admin_token is not None,
        "redis_url_present": config.redis_url is not None,
        "backends": [_backend_view(backend, config) for backend in config.backends.values()],
        "tiers": [_plain(dataclasses.asdict(tier)) for tier in config.tiers],
        "aliases": dict(config.aliases),
        "profiles": {name: _profile_view(profile) for name, profile in config.profiles.items()},
        "clients": [_client_view(client, config) for client in config.clients],
        "warnings": list(config.warnings),
        "missing_secrets": list(config.missing_secrets),
    }
