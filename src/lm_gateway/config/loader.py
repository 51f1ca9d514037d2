"""Load a config: find it, parse it, layer conf.d/ and profiles/ on top, convert, resolve, validate.

The pipeline is the one of lm-gateway-rs, so its ``config.toml`` + ``conf.d/*.toml`` +
``profiles/*.toml`` layouts load unchanged, and is the same at startup and on every reload:

1. parse the main file (``tomllib``);
2. deep-merge every ``<dir>/conf.d/*.toml`` in sorted order (:func:`deep_merge`);
3. add every ``<profile_dir>/*.toml`` as one profile, replacing a same-named inline one;
4. convert to the typed dataclasses (``convert.py``), collecting type errors and unknown keys;
5. validate references and ranges (``validate.py``) and resolve secrets (``secrets.py``);
6. sort each profile's rules by priority (highest first, stable).

Unlike lm-gateway-rs, nothing stops at the first problem: parse errors of every file, type errors,
broken references and unusable secrets are all raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from lm_gateway.config.convert import Parts, Problems, convert_tree, key_path
from lm_gateway.config.errors import ConfigError
from lm_gateway.config.schema import Config, ProfileConfig
from lm_gateway.config.secrets import resolve_secrets
from lm_gateway.config.validate import ValidationHints, validate

DEFAULT_CONFIG_PATH = Path("/etc/lm-gateway/config.toml")
EMBEDDED_SOURCE = "embedded default"
CONFIG_ENV_VAR = "LMG_CONFIG"


def find_config_path(
    cli_path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    default_path: Path = DEFAULT_CONFIG_PATH,
) -> Path | None:
    """Which config file to load: ``--config``, else ``$LMG_CONFIG``, else the default path.

    A path the user named explicitly must exist (a typo must not silently start the demo config);
    only the implicit default may be absent, in which case None means "use the embedded default".
    """
    environ = os.environ if env is None else env
    if cli_path is not None and str(cli_path):
        return _explicit(Path(cli_path), f"--config {cli_path}")
    from_env = environ.get(CONFIG_ENV_VAR)
    if from_env:
        return _explicit(Path(from_env), f"{CONFIG_ENV_VAR}={from_env}")
    return default_path if default_path.is_file() else None


def _explicit(path: Path, origin: str) -> Path:
    if not path.exists():
        raise ConfigError([f"{origin}: no such file"])
    if not path.is_file():
        raise ConfigError([f"{origin}: not a regular file"])
    return path


def embedded_default_text() -> str:
    """The TOML text of the config shipped inside the package (used when no file exists)."""
    return resources.files("lm_gateway.config").joinpath("default.toml").read_text(encoding="utf-8")


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config at ``path`` (with its conf.d/ and profiles/), or the embedded default if None.

    ``env`` is where secrets are looked up (default: ``os.environ``). Raises :class:`ConfigError`
    listing every problem found.
    """
    if path is None:
        return load_config_text(embedded_default_text(), base_dir=None, source=EMBEDDED_SOURCE, env=env)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"reading {file}: {_reason(exc)}"], source=str(file)) from exc
    return load_config_text(text, base_dir=file.parent, source=str(file), env=env)


def load_config_text(
    text: str,
    base_dir: Path | None = None,
    source: str = "<text>",
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load a config from TOML text. ``base_dir`` is where conf.d/ and profiles/ are looked for.

    With ``base_dir`` None, no conf.d/ is read and only an explicit absolute (or cwd-relative)
    ``gateway.profile_dir`` is used.
    """
    problems = Problems()
    tree = _parse(text, source, problems)
    if tree is not None and base_dir is not None:
        tree = _merge_conf_d(tree, base_dir, problems)
    if tree is not None:
        _add_profile_files(tree, base_dir, problems)
    if tree is None or problems.errors:
        # Converting a partly parsed tree would only add confusing follow-on errors.
        raise ConfigError(problems.errors, source=source)
    return _build(tree, base_dir, source, env, problems)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _parse(text: str, source: str, problems: Problems) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.error("", f"parsing {source}: {exc}")
        return None


def _read_toml(file: Path, problems: Problems) -> dict[str, Any] | None:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.error("", f"reading {file}: {_reason(exc)}")
        return None
    return _parse(text, str(file), problems)


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` onto ``base`` (neither is modified), with lm-gateway-rs semantics.

    - table + table: merged key by key, recursively; keys only in the overlay are added;
    - array + array: each overlay item that is a table with a string ``name`` equal to the ``name``
      of an item already in the array replaces that item in place; every other item is appended
      (so arrays of unnamed tables, like ``[[clients]]`` or ``rules``, are concatenated);
    - anything else (scalars, or mismatched types): the overlay value wins.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = deep_merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = _merge_arrays(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_arrays(base: list[Any], overlay: list[Any]) -> list[Any]:
    result = list(base)
    for item in overlay:
        name = item.get("name") if isinstance(item, dict) else None
        position = _named_position(result, name) if isinstance(name, str) else None
        if position is None:
            result.append(copy.deepcopy(item))
        else:
            result[position] = copy.deepcopy(item)
    return result


def _named_position(items: list[Any], name: str) -> int | None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == name:
            return index
    return None


def _merge_conf_d(tree: dict[str, Any], base_dir: Path, problems: Problems) -> dict[str, Any] | None:
    """Layer ``<base_dir>/conf.d/*.toml`` (sorted by name) onto the main tree. Missing dir: no-op."""
    conf_d = base_dir / "conf.d"
    if not conf_d.is_dir():
        return tree
    for file in sorted(conf_d.glob("*.toml")):
        if not file.is_file():
            continue
        overlay = _read_toml(file, problems)
        if overlay is not None:
            tree = deep_merge(tree, overlay)
    return tree


def _profile_dir(tree: Mapping[str, Any], base_dir: Path | None) -> tuple[Path | None, bool]:
    """(directory, explicitly configured?). A non-string profile_dir is left to the converter."""
    gateway = tree.get("gateway")
    configured = gateway.get("profile_dir") if isinstance(gateway, dict) else None
    if isinstance(configured, str) and configured:
        directory = Path(configured)
        if not directory.is_absolute() and base_dir is not None:
            directory = base_dir / directory
        return directory, True
    return (base_dir / "profiles" if base_dir is not None else None), False


def _add_profile_files(tree: dict[str, Any], base_dir: Path | None, problems: Problems) -> None:
    """Add each ``<profile_dir>/*.toml`` (sorted) as one profile, replacing a same-named one.

    The profile is named by the file's ``name`` key, else by the file stem (so ``ha-auto_fast.toml``
    can declare ``name = "ha-auto:fast"``, a name a file cannot have).
    """
    directory, explicit = _profile_dir(tree, base_dir)
    if directory is None or not directory.is_dir():
        # Silence for the default location (most setups have no profile files); a profile_dir the
        # user pointed elsewhere that does not exist is probably a typo.
        default = base_dir / "profiles" if base_dir is not None else None
        if explicit and directory != default:
            problems.warning(
                "gateway.profile_dir", f"directory {directory} does not exist; no profile files loaded"
            )
        return
    profiles = tree.setdefault("profiles", {})
    if not isinstance(profiles, dict):
        return  # the converter reports `profiles` being of the wrong type
    from_files: dict[str, Path] = {}
    for file in sorted(directory.glob("*.toml")):
        data = _read_toml(file, problems) if file.is_file() else None
        if data is None:
            continue
        name = data.pop("name", file.stem)
        if not isinstance(name, str) or not name:
            problems.error("", f"{file}: name: expected a non-empty string (the profile name)")
            continue
        where = key_path("profiles", name)
        if name in from_files:
            problems.warning(where, f"{file} replaces the same profile from {from_files[name]}")
        elif name in profiles:
            problems.warning(where, f"{file} replaces the profile defined in the config")
        profiles[name] = data
        from_files[name] = file


def _build(
    tree: dict[str, Any],
    base_dir: Path | None,
    source: str,
    env: Mapping[str, str] | None,
    problems: Problems,
) -> Config:
    parts = convert_tree(tree, problems, base_dir)
    config = _config_from(parts, source)
    checked = validate(config, ValidationHints(broken=parts.broken, positions=parts.positions))
    secrets = resolve_secrets(config, env, parts.positions.get("clients"))
    errors = [*problems.errors, *checked.errors, *secrets.errors]
    if errors:
        raise ConfigError(errors, source=source)
    return dataclasses.replace(
        config,
        profiles={name: _sorted_rules(profile) for name, profile in config.profiles.items()},
        warnings=tuple(dict.fromkeys([*problems.warnings, *checked.warnings])),
        backend_keys=secrets.backend_keys,
        client_keys=secrets.client_keys,
        admin_token=secrets.admin_token,
        redis_url=secrets.redis_url,
        missing_secrets=secrets.missing,
    )


def _config_from(parts: Parts, source: str) -> Config:
    return Config(
        gateway=parts.gateway,
        backends=parts.backends,
        tiers=parts.tiers,
        aliases=parts.aliases,
        profiles=parts.profiles,
        clients=parts.clients,
        source=source,
    )


def _sorted_rules(profile: ProfileConfig) -> ProfileConfig:
    """Highest priority first. ``sorted`` is stable, so equal priorities keep file order.

    Done after validation so that validation messages index rules as they appear in the file.
    """
    rules = tuple(sorted(profile.rules, key=lambda rule: -rule.priority))
    return dataclasses.replace(profile, rules=rules)
