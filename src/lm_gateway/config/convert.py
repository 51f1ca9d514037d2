"""Turn a merged TOML tree into the typed dataclasses of ``schema.py``.

The converter is generic: it reads each dataclass's fields and type hints, so a field added to the
schema is parsed, type-checked and documented-by-error-message without touching this file. It never
stops at the first problem: every type error becomes one line with its full key path
(``backends.ollama.timeout_ms: expected an integer, got "30s"``) and conversion goes on with the rest,
so one load reports everything. Unknown keys are warnings, not errors (a config written for a newer
version still loads), with a "did you mean" when the key is close to a known one.

Items that fail conversion are dropped from the result, but their names are remembered in
:class:`Parts.broken` so that validation does not pile "unknown tier" errors on top of the real one.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from lm_gateway.config.schema import (
    BackendConfig,
    ClientConfig,
    GatewayConfig,
    ProfileConfig,
    Provider,
    SecretSource,
    TierConfig,
)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Field-name fragments whose string values are never echoed in messages: a user who pastes a real key
# where a var name or a table belongs must not find it in the logs.
_SENSITIVE_FRAGMENTS = ("key", "secret", "token", "password")

# Accepted spellings that are not the canonical value. lm-gateway-rs documents "open_router" in a
# comment but only parses "openrouter"; we accept both and ask for the canonical one.
ENUM_SYNONYMS: dict[type[Enum], dict[str, Enum]] = {
    Provider: {"open_router": Provider.OPENROUTER},
}

# Extra advice for unknown keys that people commonly write by mistake.
_UNKNOWN_KEY_ADVICE: dict[str, str] = {
    "api_key": (
        "a key written in the config file is never used; put it in an environment variable named by "
        'api_key_env, or in a file named by api_key_secret = {source = "file", path = ...}'
    ),
}

_TOP_LEVEL_KEYS = ("gateway", "backends", "tiers", "aliases", "profiles", "clients")


class _Failed:
    """Sentinel type for "this value did not convert" (its problem is already recorded)."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED = _Failed()


def key_path(parent: str, key: str) -> str:
    """Join a key onto a path the way TOML spells it: bare keys plain, others quoted."""
    part = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def index_path(parent: str, index: int) -> str:
    return f"{parent}[{index}]"


def suggest(word: str, known: typing.Iterable[str]) -> str | None:
    """The closest known word, when one is close enough to be a likely typo."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return matches[0] if matches else None


def describe_value(value: object, sensitive: bool = False) -> str:
    """A short human rendering of a TOML value for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if sensitive:
            return "a string"
        text = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def _is_sensitive(path: str) -> bool:
    last = path.rsplit(".", 1)[-1].lower()
    return any(fragment in last for fragment in _SENSITIVE_FRAGMENTS)


@dataclass
class Problems:
    """Collected findings of one load: errors make it fail, warnings are carried on the Config."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, text: str) -> None:
        self.errors.append(f"{path}: {text}" if path else text)

    def warning(self, path: str, text: str) -> None:
        self.warnings.append(f"{path}: {text}" if path else text)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a schema dataclass (its annotations are strings), cached."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _type_name(tp: Any) -> str:
    """How a type is named in "expected ..." messages."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true or false)"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a table"
    if origin in (list, tuple):
        return "an array"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(json.dumps(str(member.value)) for member in tp)
    return str(tp)


class Converter:
    """Converts raw TOML values to typed values, recording problems instead of raising."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems

    def convert(self, tp: Any, value: object, path: str) -> Any:
        """Convert ``value`` to type ``tp``; returns :data:`FAILED` after recording the problem."""
        if tp is Any:
            return value
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            return self._optional(tp, value, path)
        if origin is dict:
            return self._dict(tp, value, path)
        if origin in (list, tuple):
            return self._sequence(tp, origin, value, path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.dataclass(tp, value, path)
        if isinstance(tp, type) and issubclass(tp, Enum):
            return self._enum(tp, value, path)
        return self._scalar(tp, value, path)

    def _mismatch(self, tp: Any, value: object, path: str) -> _Failed:
        got = describe_value(value, sensitive=_is_sensitive(path))
        self.problems.error(path, f"expected {_type_name(tp)}, got {got}")
        return FAILED

    def _scalar(self, tp: Any, value: object, path: str) -> Any:
        # bool is a subclass of int in Python, but `timeout_ms = true` is a mistake, not 1.
        if tp is bool:
            return value if isinstance(value, bool) else self._mismatch(tp, value, path)
        if tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return value if ok else self._mismatch(tp, value, path)
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return self._mismatch(tp, value, path)
        if tp is str:
            return value if isinstance(value, str) else self._mismatch(tp, value, path)
        raise TypeError(f"config schema uses an unsupported type {tp!r} at {path}")

    def _optional(self, tp: Any, value: object, path: str) -> Any:
        members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if value is None:
            return None
        if len(members) != 1:
            raise TypeError(f"config schema uses an unsupported union {tp!r} at {path}")
        return self.convert(members[0], value, path)

    def _dict(self, tp: Any, value: object, path: str) -> Any:
        if not isinstance(value, dict):
            return self._mismatch(tp, value, path)
        _key_type, value_type = typing.get_args(tp)
        result: dict[str, Any] = {}
        for key, item in value.items():
            converted = self.convert(value_type, item, key_path(path, key))
            if converted is not FAILED:
                result[key] = converted
        return result

    def _sequence(self, tp: Any, origin: Any, value: object, path: str) -> Any:
        if not isinstance(value, list):
            return self._mismatch(tp, value, path)
        item_type = typing.get_args(tp)[0]
        items = [self.convert(item_type, item, index_path(path, i)) for i, item in enumerate(value)]
        kept = [item for item in items if item is not FAILED]
        return tuple(kept) if origin is tuple else kept

    def _enum(self, tp: type[Enum], value: object, path: str) -> Any:
        if not isinstance(value, str):
            return self._mismatch(tp, value, path)
        allowed = {str(member.value): member for member in tp}
        if value in allowed:
            return allowed[value]
        synonym = ENUM_SYNONYMS.get(tp, {}).get(value)
        if synonym is not None:
            self.problems.warning(
                path, f'"{value}" is accepted as a synonym; write "{synonym.value}" instead'
            )
            return synonym
        hint = allowed.get(value.lower())
        close = str(hint.value) if hint is not None else suggest(value, allowed)
        extra = f' (did you mean "{close}"?)' if close else ""
        self.problems.error(path, f"expected {_type_name(tp)}, got {describe_value(value)}{extra}")
        return FAILED

    def dataclass(
        self, cls: type[Any], value: object, path: str, injected: Mapping[str, object] | None = None
    ) -> Any:
        """Build ``cls`` from a table. ``injected`` fields (e.g. ``name`` from the table key) win.

        A field that fails falls back to its default when it has one, so the object still exists
        for validation; a required field that fails or is missing fails the whole object.
        """
        if not isinstance(value, dict):
            return self._mismatch(cls, value, path)
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = dict(injected or {})
        complete = True
        for key, raw in value.items():
            if key in kwargs:
                continue
            if key not in fields:
                self.unknown_key(path, key, fields)
                continue
            converted = self.convert(hints[key], raw, key_path(path, key))
            if converted is FAILED:
                complete = complete and _has_default(fields[key])
            else:
                kwargs[key] = converted
        for name, spec in fields.items():
            if name not in kwargs and name not in value and not _has_default(spec):
                self.problems.error(key_path(path, name), "required key is missing")
                complete = False
        return cls(**kwargs) if complete else FAILED

    def unknown_key(self, path: str, key: str, known: typing.Iterable[str]) -> None:
        advice = _UNKNOWN_KEY_ADVICE.get(key)
        close = suggest(key, known)
        text = "unknown key, ignored"
        if advice:
            text += f"; {advice}"
        elif close:
            text += f' (did you mean "{close}"?)'
        self.problems.warning(key_path(path, key), text)


def _has_default(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING


@dataclass
class Parts:
    """The converted sections of a config, before secrets are resolved and references validated."""

    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    tiers: tuple[TierConfig, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    clients: tuple[ClientConfig, ...] = ()
    # Names of items present in the file that failed conversion, by section ("backends", "tiers",
    # "profiles", "aliases"): references to them are not reported again as "unknown".
    broken: dict[str, set[str]] = field(default_factory=dict)
    # For each converted [[tiers]] / [[clients]] entry, its index in the file's list (they differ
    # once an entry failed), so that later messages name the entry the user wrote.
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)


_LOG_LEVEL_SYNONYMS = {"warn": "warning", "trace": "debug", "fatal": "critical"}


def convert_tree(tree: Mapping[str, Any], problems: Problems, base_dir: Path | None = None) -> Parts:
    """Convert the whole merged tree. ``base_dir`` anchors relative secret file paths."""
    converter = Converter(problems)
    parts = Parts(broken={"backends": set(), "tiers": set(), "profiles": set(), "aliases": set()})
    for key in tree:
        if key not in _TOP_LEVEL_KEYS:
            converter.unknown_key("", key, _TOP_LEVEL_KEYS)
    _convert_gateway(converter, tree, parts, base_dir)
    _convert_backends(converter, tree, parts, base_dir)
    _convert_tiers(converter, tree, parts)
    _convert_aliases(converter, tree, parts)
    _convert_profiles(converter, tree, parts)
    _convert_clients(converter, tree, parts)
    return parts


def _section(converter: Converter, tree: Mapping[str, Any], key: str, kind: type) -> Any:
    """The raw section ``key`` if it has the right TOML shape, else None (problem recorded)."""
    value = tree.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        expected = "a table" if kind is dict else "an array of tables ([[" + key + "]])"
        converter.problems.error(key, f"expected {expected}, got {describe_value(value)}")
        return None
    return value


def _convert_gateway(
    converter: Converter, tree: Mapping[str, Any], parts: Parts, base_dir: Path | None
) -> None:
    # lm-gateway-rs requires a [gateway] section; every key in it has a default, so we do not.
    raw = _section(converter, tree, "gateway", dict)
    if raw is None:
        return
    gateway = converter.dataclass(GatewayConfig, raw, "gateway")
    if gateway is FAILED:
        return
    if isinstance(gateway.log_level, str):
        level = gateway.log_level.strip().lower()
        gateway = dataclasses.replace(gateway, log_level=_LOG_LEVEL_SYNONYMS.get(level, level))
    parts.gateway = dataclasses.replace(gateway, redis_url=anchored(gateway.redis_url, base_dir))


def _named(converter: Converter, cls: type, raw: object, path: str, name: str) -> Any:
    """Convert a table whose ``name`` field comes from its table key (backends, profiles).

    A ``name`` key inside the table is accepted when it agrees (profile files carry one); when it
    differs, the table key wins and the user is told.
    """
    if isinstance(raw, dict) and "name" in raw and raw["name"] != name:
        converter.problems.warning(
            key_path(path, "name"),
            f"{describe_value(raw['name'])} ignored: this table is named {json.dumps(name)} by its key",
        )
    return converter.dataclass(cls, raw, path, injected={"name": name})


def _convert_backends(
    converter: Converter, tree: Mapping[str, Any], parts: Parts, base_dir: Path | None
) -> None:
    raw = _section(converter, tree, "backends", dict)
    for name, table in (raw or {}).items():
        backend = _named(converter, BackendConfig, table, key_path("backends", name), name)
        if backend is FAILED:
            parts.broken["backends"].add(name)
            continue
        parts.backends[name] = _normalise_backend(backend, base_dir)


def _normalise_backend(backend: BackendConfig, base_dir: Path | None) -> BackendConfig:
    """Trim trailing slashes (adapters append paths) and anchor a relative secret file path.

    A relative ``api_key_secret.path`` resolves against the config directory, like ``profile_dir``,
    so the config means the same thing whatever the working directory of the process is.
    """
    secret = anchored(backend.api_key_secret, base_dir)
    return dataclasses.replace(backend, base_url=backend.base_url.rstrip("/"), api_key_secret=secret)


def anchored(secret: SecretSource | None, base_dir: Path | None) -> SecretSource | None:
    """A secret file path relative to the config directory, made absolute."""
    if secret is not None and secret.path and base_dir is not None and not Path(secret.path).is_absolute():
        return SecretSource(source=secret.source, var=secret.var, path=str(base_dir / secret.path))
    return secret


def _convert_tiers(converter: Converter, tree: Mapping[str, Any], parts: Parts) -> None:
    raw = _section(converter, tree, "tiers", list)
    tiers: list[TierConfig] = []
    positions: list[int] = []
    for index, item in enumerate(raw or []):
        tier = converter.dataclass(TierConfig, item, index_path("tiers", index))
        if tier is FAILED:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                parts.broken["tiers"].add(item["name"])
            continue
        tiers.append(tier)
        positions.append(index)
    parts.tiers = tuple(tiers)
    parts.positions["tiers"] = tuple(positions)


def _convert_aliases(converter: Converter, tree: Mapping[str, Any], parts: Parts) -> None:
    raw = _section(converter, tree, "aliases", dict)
    for alias, target in (raw or {}).items():
        if isinstance(target, str):
            parts.aliases[alias] = target
        else:
            converter.problems.error(
                key_path("aliases", alias), f"expected a tier name (a string), got {describe_value(target)}"
            )
            parts.broken["aliases"].add(alias)


def _convert_profiles(converter: Converter, tree: Mapping[str, Any], parts: Parts) -> None:
    raw = _section(converter, tree, "profiles", dict)
    for name, table in (raw or {}).items():
        profile = _named(converter, ProfileConfig, table, key_path("profiles", name), name)
        if profile is FAILED:
            parts.broken["profiles"].add(name)
            continue
        parts.profiles[name] = profile


def _convert_clients(converter: Converter, tree: Mapping[str, Any], parts: Parts) -> None:
    raw = _section(converter, tree, "clients", list)
    clients: list[ClientConfig] = []
    positions: list[int] = []
    for index, item in enumerate(raw or []):
        client = converter.dataclass(ClientConfig, item, index_path("clients", index))
        if client is not FAILED:
            clients.append(client)
            positions.append(index)
    parts.clients = tuple(clients)
    parts.positions["clients"] = tuple(positions)
