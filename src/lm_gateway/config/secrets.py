"""Resolve the secrets a config refers to: backend API keys, client keys and the admin token.

The config file only names where a secret lives (an env var, or a file such as a Docker/systemd
secret); values are read here, wrapped in :class:`Secret` (whose repr never shows them) and kept out
of every message. A secret that is simply absent is not fatal: the gateway starts, and the owner of
the secret (a backend, a client, the admin API) reports it clearly when used. A secret that is present
but unusable in an HTTP header (CR/LF and other control bytes, non-ASCII, edge whitespace) is an error,
because sending it would either fail on every request or, worse, split headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lm_gateway.config.convert import key_path
from lm_gateway.config.schema import ClientConfig, Config, Secret, SecretSource

# Visible ASCII. Spaces are allowed inside a value but not at its edges, where HTTP parsers strip them
# (so the value the server compares would not be the value configured).
_HEADER_SAFE = frozenset(chr(code) for code in range(0x21, 0x7F))
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True, slots=True)
class SecretLookup:
    """The outcome of reading one secret source.

    Exactly one of ``secret``, ``missing`` and ``invalid`` is set. ``missing`` and ``invalid`` are
    human text naming the source (``env var X is not set``), never the value.
    """

    secret: Secret | None = None
    missing: str | None = None
    invalid: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedSecrets:
    """Every secret of a config, resolved. ``errors`` fail the load; ``missing`` are reported."""

    backend_keys: dict[str, Secret]
    client_keys: tuple[tuple[ClientConfig, Secret], ...]
    admin_token: Secret | None
    redis_url: Secret | None
    missing: tuple[str, ...]
    errors: tuple[str, ...]


def secret_files(config: Config) -> list[Path]:
    """The files ``config`` reads secrets from (the config watcher watches them)."""
    sources = [backend.key_source for backend in config.backends.values()] + [config.gateway.redis_url]
    return [Path(s.path) for s in sources if s is not None and s.source == "file" and s.path]


def redis_url_problem(value: str) -> str | None:
    """Why ``value`` is not a usable Redis URL (never quoting it: it may hold a password)."""
    if not value.startswith(REDIS_SCHEMES):
        return "is not a Redis URL (redis://, rediss://, unix://)"
    if value.startswith("unix://"):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return "is not a valid Redis URL (its host or port cannot be read)"
    if not parts.hostname:
        return "has no host name"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "names a database that is not a number (redis://host:6379/0)"
    return None


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as (part of) an HTTP header value, or None when it can."""
    if value != value.strip(" \t"):
        return "has leading or trailing whitespace"
    if any(char not in _HEADER_SAFE and char != " " for char in value):
        return (
            "contains characters not allowed in an HTTP header (control characters such as CR/LF, "
            "or non-ASCII)"
        )
    return None


def _describe(source: SecretSource) -> str:
    return f"env var {source.var}" if source.source == "env" else f"secret file {source.path}"


def _read(source: SecretSource, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(value, reason-missing). An empty value counts as missing."""
    if source.source == "env":
        if not source.var:
            return None, "no env var named (set api_key_secret.var)"
        value = env.get(source.var)
        if value is None:
            return None, f"env var {source.var} is not set"
        return (value, None) if value else (None, f"env var {source.var} is empty")
    if source.source == "file":
        if not source.path:
            return None, "no secret file named (set api_key_secret.path)"
        try:
            with open(source.path, encoding="utf-8") as handle:
                value = handle.read().rstrip("\r\n")
        except FileNotFoundError:
            return None, f"secret file {source.path} does not exist"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return None, f"cannot read secret file {source.path}: {reason}"
        return (value, None) if value else (None, f"secret file {source.path} is empty")
    return None, f'unknown secret source "{source.source}" (use "env" or "file")'


def resolve_secret(source: SecretSource, env: Mapping[str, str] | None = None) -> SecretLookup:
    """Read one secret now. Backends may call this again later to pick up a rotated file secret."""
    value, missing = _read(source, os.environ if env is None else env)
    if value is None:
        return SecretLookup(missing=missing)
    problem = header_problem(value)
    if problem is not None:
        return SecretLookup(invalid=f"the value of {_describe(source)} {problem}; fix the secret")
    return SecretLookup(secret=Secret(value))


def resolve_secrets(
    config: Config,
    env: Mapping[str, str] | None = None,
    client_positions: Sequence[int] | None = None,
) -> ResolvedSecrets:
    """Resolve every secret ``config`` names. ``client_positions`` maps clients to file indexes."""
    environ = os.environ if env is None else env
    missing: list[str] = []
    errors: list[str] = []

    backend_keys: dict[str, Secret] = {}
    for name, backend in config.backends.items():
        source = backend.key_source
        if source is None:
            continue
        secret = _collect(resolve_secret(source, environ), key_path("backends", name), missing, errors)
        if secret is not None:
            backend_keys[name] = secret

    client_keys: list[tuple[ClientConfig, Secret]] = []
    for index, client in enumerate(config.clients):
        position = client_positions[index] if client_positions else index
        who = f"clients[{position}] (profile '{client.profile}')"
        if not client.key_env:
            continue  # validation reports the empty key_env
        lookup = resolve_secret(SecretSource(source="env", var=client.key_env), environ)
        secret = _collect(lookup, who, missing, errors)
        if secret is not None:
            client_keys.append((client, secret))
    errors.extend(_ambiguous_client_keys(client_keys))

    admin_token: Secret | None = None
    var = config.gateway.admin_token_env
    if var:
        lookup = resolve_secret(SecretSource(source="env", var=var), environ)
        admin_token = _collect(lookup, "gateway.admin_token_env", missing, errors)

    redis_url: Secret | None = None
    if config.gateway.redis_url is not None:
        lookup = resolve_secret(config.gateway.redis_url, environ)
        redis_url = _collect(lookup, "gateway.redis_url", missing, errors)
        problem = redis_url_problem(redis_url.reveal()) if redis_url is not None else None
        if problem is not None:
            errors.append(f"gateway.redis_url: the value of {_describe(config.gateway.redis_url)} {problem}")
            redis_url = None

    return ResolvedSecrets(
        backend_keys=backend_keys,
        client_keys=tuple(client_keys),
        admin_token=admin_token,
        redis_url=redis_url,
        missing=tuple(missing),
        errors=tuple(errors),
    )


def _collect(lookup: SecretLookup, who: str, missing: list[str], errors: list[str]) -> Secret | None:
    if lookup.missing is not None:
        missing.append(f"{who}: {lookup.missing}")
    if lookup.invalid is not None:
        errors.append(f"{who}: {lookup.invalid}")
    return lookup.secret


def _ambiguous_client_keys(client_keys: Sequence[tuple[ClientConfig, Secret]]) -> list[str]:
    """One key value bound to two different profiles: which one a caller gets would be arbitrary."""
    first_by_value: dict[Secret, ClientConfig] = {}
    problems: list[str] = []
    for client, secret in client_keys:
        first = first_by_value.setdefault(secret, client)
        # The same key_env bound twice is a config mistake, which validation already reports.
        if first.profile != client.profile and first.key_env != client.key_env:
            problems.append(
                f"clients: env vars {first.key_env} and {client.key_env} hold the same key but map it "
                f"to different profiles ('{first.profile}' and '{client.profile}'); give each client its "
                "own key"
            )
    return problems
