"""Secrets (env, file, missing, unusable) and the redacted admin view: no value ever leaks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lm_gateway.config import (
    Config,
    ConfigError,
    Secret,
    SecretSource,
    load_config,
    load_config_text,
    redact_url,
    redacted_view,
    resolve_secret,
)

CANARY_BACKEND = "sk-CANARY-backend-7f3a9e"
CANARY_FILE = "sk-CANARY-file-51c2d0"
CANARY_CLIENT = "sk-CANARY-client-a81b44"
CANARY_ADMIN = "sk-CANARY-admin-0d9e12"
CANARIES = (CANARY_BACKEND, CANARY_FILE, CANARY_CLIENT, CANARY_ADMIN, "CANARY")

CONFIG = """
[gateway]
admin_host = "127.0.0.1"
admin_token_env = "ADMIN_TOKEN"

[backends.ollama]
provider = "ollama"
base_url = "http://127.0.0.1:11434"

[backends.openrouter]
provider = "openrouter"
base_url = "https://openrouter.ai/api"
api_key_env = "OPENROUTER_API_KEY"

[backends.claude]
provider = "anthropic"
base_url = "https://api.anthropic.com"
api_key_secret = { source = "file", path = "claude.key" }

[[tiers]]
name = "local:fast"
backend = "ollama"
model = "qwen3:1.7b"

[profiles.default]
classifier = "local:fast"

[profiles.economy]
mode = "escalate"
classifier = "local:fast"

[[clients]]
name = "ha"
key_env = "CLIENT_KEY"
profile = "economy"

[[clients]]
key_env = "OTHER_CLIENT_KEY"
profile = "default"
"""

FULL_ENV = {"OPENROUTER_API_KEY": CANARY_BACKEND, "CLIENT_KEY": CANARY_CLIENT, "ADMIN_TOKEN": CANARY_ADMIN}


def setup(tmp_path: Path, key_file: str | None = CANARY_FILE + "\r\n", text: str = CONFIG) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    if key_file is not None:
        (tmp_path / "claude.key").write_text(key_file, encoding="utf-8")
    return path


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text


def test_env_and_file_secrets_resolve(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path), env=FULL_ENV)
    assert config.backend_keys["openrouter"].reveal() == CANARY_BACKEND
    assert config.backend_keys["claude"].reveal() == CANARY_FILE  # trailing \r\n stripped
    assert "ollama" not in config.backend_keys
    assert [(client.key_env, secret.reveal()) for client, secret in config.client_keys] == [
        ("CLIENT_KEY", CANARY_CLIENT)
    ]
    assert config.admin_token is not None and config.admin_token.reveal() == CANARY_ADMIN
    assert config.missing_secrets == ("clients[1] (profile 'default'): env var OTHER_CLIENT_KEY is not set",)


def test_relative_secret_file_resolves_against_config_dir(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path), env=FULL_ENV)
    source = config.backends["claude"].key_source
    assert source is not None and source.path == str(tmp_path / "claude.key")


def test_missing_secrets_are_named_but_not_fatal(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path, key_file=None), env={"OPENROUTER_API_KEY": ""})
    assert config.backend_keys == {}
    assert config.client_keys == ()
    assert config.admin_token is None
    assert config.missing_secrets == (
        "backends.openrouter: env var OPENROUTER_API_KEY is empty",
        f"backends.claude: secret file {tmp_path / 'claude.key'} does not exist",
        "clients[0] (profile 'economy'): env var CLIENT_KEY is not set",
        "clients[1] (profile 'default'): env var OTHER_CLIENT_KEY is not set",
        "gateway.admin_token_env: env var ADMIN_TOKEN is not set",
    )


def test_empty_secret_file_counts_as_missing(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path, key_file="\n"), env=FULL_ENV)
    assert "claude" not in config.backend_keys
    assert f"backends.claude: secret file {tmp_path / 'claude.key'} is empty" in config.missing_secrets


@pytest.mark.parametrize(
    "value",
    [
        CANARY_BACKEND + "\r\nX-Evil: 1",
        CANARY_BACKEND + "\n",
        " " + CANARY_BACKEND,
        CANARY_BACKEND + "\x00",
        CANARY_BACKEND + "é",
    ],
)
def test_secret_unusable_in_a_header_is_an_error_without_its_value(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(setup(tmp_path), env={**FULL_ENV, "OPENROUTER_API_KEY": value})
    (problem,) = caught.value.problems
    assert problem.startswith("backends.openrouter: the value of env var OPENROUTER_API_KEY ")
    assert problem.endswith("; fix the secret")
    assert_no_canary(str(caught.value))
    assert_no_canary(repr(caught.value))


def test_secret_file_with_inner_newline_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(setup(tmp_path, key_file=CANARY_FILE + "\nsecond line\n"), env=FULL_ENV)
    assert caught.value.problems[0].startswith(
        f"backends.claude: the value of secret file {tmp_path / 'claude.key'}"
    )
    assert_no_canary(str(caught.value))


def test_same_key_for_two_profiles_is_an_error_without_its_value(tmp_path: Path) -> None:
    env = {**FULL_ENV, "OTHER_CLIENT_KEY": CANARY_CLIENT}
    with pytest.raises(ConfigError) as caught:
        load_config(setup(tmp_path), env=env)
    assert caught.value.problems == [
        "clients: env vars CLIENT_KEY and OTHER_CLIENT_KEY hold the same key but map it to different "
        "profiles ('economy' and 'default'); give each client its own key"
    ]
    assert_no_canary(str(caught.value))


def test_canaries_never_appear_in_any_view(tmp_path: Path) -> None:
    config = load_config(setup(tmp_path), env=FULL_ENV)
    assert len(config.backend_keys) == 2 and config.admin_token is not None  # the canaries are loaded
    assert_no_canary(repr(config))
    assert_no_canary(str(config))
    assert_no_canary("\n".join(config.warnings))
    assert_no_canary("\n".join(config.missing_secrets))
    assert_no_canary(json.dumps(redacted_view(config)))
    assert_no_canary(f"{config.admin_token} {config.backend_keys!r} {config.client_keys}")


def test_secret_written_into_the_config_is_never_echoed() -> None:
    text = CONFIG.replace('api_key_env = "OPENROUTER_API_KEY"', f'api_key = "{CANARY_BACKEND}"')
    config = load_config_text(text, env={})
    assert any(
        warning.startswith("backends.openrouter.api_key: unknown key, ignored; a key written")
        for warning in config.warnings
    )
    assert_no_canary("\n".join(config.warnings))
    assert_no_canary(json.dumps(redacted_view(config)))
    wrong_shape = CONFIG.replace('api_key_env = "OPENROUTER_API_KEY"', f'api_key_secret = "{CANARY_BACKEND}"')
    with pytest.raises(ConfigError) as caught:
        load_config_text(wrong_shape, env={})
    assert caught.value.problems == ["backends.openrouter.api_key_secret: expected a table, got a string"]


def test_secret_object_hides_its_value() -> None:
    secret = Secret(CANARY_ADMIN)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert secret == Secret(CANARY_ADMIN) and secret.reveal() == CANARY_ADMIN


def test_resolve_secret_can_be_called_again_for_rotation(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("first\n", encoding="utf-8")
    source = SecretSource(source="file", path=str(key))
    first = resolve_secret(source)
    assert first.secret is not None and first.secret.reveal() == "first"
    key.write_text("second", encoding="utf-8")
    second = resolve_secret(source)
    assert second.secret is not None and second.secret.reveal() == "second"
    assert (
        resolve_secret(SecretSource(var="NOPE_NOT_SET_X"), env={}).missing
        == "env var NOPE_NOT_SET_X is not set"
    )


# -- redacted view --------------------------------------------------------------------------------


def view_of(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Config, dict[str, object]]:
    config = load_config(setup(tmp_path), env=FULL_ENV if env is None else env)
    view = redacted_view(config)
    assert json.loads(json.dumps(view)) == view  # plain JSON data
    return config, view


def test_redacted_view_backends(tmp_path: Path) -> None:
    _config, view = view_of(tmp_path, env={"OPENROUTER_API_KEY": CANARY_BACKEND})
    backends = {backend["name"]: backend for backend in view["backends"]}  # type: ignore[attr-defined]
    assert backends["openrouter"] == {
        "name": "openrouter",
        "provider": "openrouter",
        "base_url": "https://openrouter.ai/api",
        "has_api_key": True,
        "api_key_present": True,
        "api_key_source": "env",
        "api_key_env": "OPENROUTER_API_KEY",
        "api_key_file": None,
        "timeout_ms": 30000,
        "connect_timeout_ms": 5000,
        "max_connections": 256,
        "default_options": None,
    }
    assert backends["claude"]["api_key_source"] == "file"
    assert backends["claude"]["api_key_file"] == str(tmp_path / "claude.key")
    assert backends["claude"]["api_key_env"] is None
    assert backends["ollama"]["has_api_key"] is False and backends["ollama"]["api_key_source"] is None
    assert "api_key" not in backends["openrouter"]


def test_redacted_view_sections(tmp_path: Path) -> None:
    config, view = view_of(tmp_path)
    assert view["gateway"]["admin_token_env"] == "ADMIN_TOKEN"  # type: ignore[index]
    assert set(view["gateway"]) == {spec for spec in config.gateway.__dataclass_fields__}  # type: ignore[arg-type]
    assert view["admin_token_present"] is True
    assert view["tiers"] == [
        {
            "name": "local:fast",
            "backend": "ollama",
            "model": "qwen3:1.7b",
            "think": None,
            "max_context_tokens": None,
            "input_cost_per_mtok": None,
            "output_cost_per_mtok": None,
        }
    ]
    assert view["profiles"]["economy"]["mode"] == "escalate"  # type: ignore[index]
    assert view["clients"] == [
        {"name": "ha", "key_env": "CLIENT_KEY", "profile": "economy", "key_present": True},
        {
            "name": "OTHER_CLIENT_KEY",
            "key_env": "OTHER_CLIENT_KEY",
            "profile": "default",
            "key_present": False,
        },
    ]
    assert view["missing_secrets"] == list(config.missing_secrets)


def test_redacted_view_profiles_include_rules_and_prompts() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "config.example.toml", env={})
    profile = redacted_view(config)["profiles"]["auto"]
    assert profile["rules"][0] == {"when": {"domain": "code"}, "route_to": "coding", "priority": 10}
    assert profile["class_prompts"]["instant"] == "Answer in one sentence."
    assert profile["thinking_messages"] == {"local:deep": ["Let me think about that...", "Working on it..."]}
    assert profile["classifier_prompt"].startswith("\nClassify") or profile["classifier_prompt"].startswith(
        "Classify"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:8080/x", "http://***@host:8080/x"),
        ("https://token@host", "https://***@host"),
        ("http://host:1/a@b", "http://host:1/a@b"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("http://u:p@[::1:8080/", "http://***@[::1:8080/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redacted_view_masks_userinfo_even_in_an_unvalidated_config() -> None:
    config = load_config(None, env={})
    backend = config.backends["ollama"]
    from dataclasses import replace

    leaky = replace(
        config, backends={"ollama": replace(backend, base_url="http://me:hunter2@127.0.0.1:11434")}
    )
    text = json.dumps(redacted_view(leaky))
    assert "hunter2" not in text and "http://***@127.0.0.1:11434" in text


def test_default_options_that_look_like_credentials_are_masked() -> None:
    config = load_config(None, env={})
    from dataclasses import replace

    backend = replace(config.backends["ollama"], default_options={"num_ctx": 4, "api_token": "t0psecret"})
    view = redacted_view(replace(config, backends={"ollama": backend}))
    assert view["backends"][0]["default_options"] == {"num_ctx": 4, "api_token": "***"}
