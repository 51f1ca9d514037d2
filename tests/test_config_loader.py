"""Config loading: files, conf.d/ merge, profiles/ dir, conversion, embedded default, path lookup."""

from __future__ import annotations

import re
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from lm_gateway.config import (
    EMBEDDED_SOURCE,
    BackendConfig,
    ClientConfig,
    Config,
    ConfigError,
    GatewayConfig,
    Mode,
    ProfileConfig,
    Provider,
    RuleConfig,
    TierConfig,
    deep_merge,
    find_config_path,
    load_config,
    load_config_text,
)

REPO = Path(__file__).resolve().parents[1]

BASE = """
[gateway]
client_port = 8080
admin_host = "127.0.0.1"

[backends.ollama]
provider = "ollama"
base_url = "http://127.0.0.1:11434"

[[tiers]]
name = "local:fast"
backend = "ollama"
model = "qwen3:1.7b"

[[tiers]]
name = "local:deep"
backend = "ollama"
model = "qwen3:32b"

[aliases]
"hint:fast" = "local:fast"

[profiles.default]
classifier = "local:fast"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(text: str, **kwargs: object) -> Config:
    return load_config_text(textwrap.dedent(text), env={}, **kwargs)  # type: ignore[arg-type]


def problems_of(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, **kwargs)
    return caught.value.problems


# -- shipped configs ------------------------------------------------------------------------------


def test_example_config_loads_and_validates_without_warnings() -> None:
    config = load_config(REPO / "config.example.toml", env={})
    assert config.warnings == ()
    assert {mode for mode in (p.mode for p in config.profiles.values())} == set(Mode)
    assert config.profiles["auto"].rules[0].route_to == "coding"  # priority 10 first
    assert config.backends["ollama"].default_options == {"num_ctx": 16384}
    assert config.backends["anthropic"].key_source is not None
    assert config.backends["anthropic"].key_source.source == "file"
    assert config.source == str(REPO / "config.example.toml")


def test_example_config_uses_every_schema_field() -> None:
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    for cls in (GatewayConfig, BackendConfig, TierConfig, ProfileConfig, RuleConfig, ClientConfig):
        for spec in fields(cls):
            if spec.name == "name" and cls in (BackendConfig, ProfileConfig):
                continue  # named by the table key
            used = re.search(rf"^\s*{spec.name}\s*=|\.{spec.name}\]", text, re.MULTILINE)
            assert used, f"{cls.__name__}.{spec.name} is not in config.example.toml"


def test_embedded_default_loads_and_routes_offline() -> None:
    config = load_config(None, env={})
    assert config.source == EMBEDDED_SOURCE
    assert config.warnings == ()
    assert config.missing_secrets == ()
    assert config.gateway.client_host == "0.0.0.0"
    assert config.gateway.client_port == 8080
    assert config.gateway.admin_host == "127.0.0.1"
    assert config.gateway.admin_port == 8081
    assert config.tiers[0].name == "local:demo"
    assert config.backends[config.tiers[0].backend].provider is Provider.DEMO
    for hint in ("hint:fast", "hint:cheap", "hint:local", "hint:standard", "hint:expert", "hint:cloud"):
        tier = config.resolve_tier(hint)
        assert tier is not None and config.backends[tier.backend].provider is Provider.DEMO
    default = config.profiles["default"]
    assert default.mode is Mode.DISPATCH
    assert default.classifier == "local:demo"
    assert default.unknown_model_fallback is False


# -- every key of the lm-gateway-rs format -----------------------------------------------------------

RUST_FORMAT = """
[gateway]
client_port = 18080
admin_port = 18081
traffic_log_capacity = 100
log_level = "debug"
rate_limit_rpm = 60
admin_token_env = "ADMIN_TOKEN"
public_profile = "economy"
max_retries = 1
retry_delay_ms = 100
health_window = 20
health_error_threshold = 0.5
request_timeout_ms = 0
traffic_log_debug = true
profile_dir = "profiles"

[backends.ollama]
base_url = "http://127.0.0.1:11434/"
provider = "ollama"
timeout_ms = 60000
default_options = { num_ctx = 16384 }

[backends.openai-prod]
base_url = "https://api.openai.com"
api_key_env = "OPENAI_KEY"

[backends.router]
base_url = "https://openrouter.ai/api"
provider = "openrouter"
api_key_secret = { source = "env", var = "ROUTER_KEY" }

[backends.claude]
base_url = "https://api.anthropic.com"
provider = "anthropic"
api_key_secret = { source = "file", path = "/nonexistent/claude_key" }

[[tiers]]
name = "local:instant"
backend = "ollama"
model = "qwen3:0.6b"
think = false
max_context_tokens = 8192

[[tiers]]
name = "local:fast"
backend = "ollama"
model = "qwen3:1.7b"

[[tiers]]
name = "cloud:fast"
backend = "openai-prod"
model = "gpt-4o-mini"

[[tiers]]
name = "cloud:deep"
backend = "claude"
model = "claude-sonnet"

[aliases]
"hint:fast" = "local:fast"
"hint:cloud" = "cloud:fast"

[profiles.default]
mode = "dispatch"
classifier = "local:fast"

[profiles.economy]
mode = "escalate"
classifier = "local:instant"
max_auto_tier = "cloud:fast"

[profiles.auto]
mode = "classify"
classifier = "local:instant"
max_auto_tier = "cloud:deep"
expert_requires_flag = true
rate_limit_rpm = 30
classifier_prompt = "Classify."
classifier_think = false
classifier_timeout_ms = 5000
system_prompt = "Be brief."
classifier_context = 3
reply_message = "unused outside reply mode"

[[profiles.auto.rules]]
when = { domain = "code" }
route_to = "economy"

[[profiles.auto.rules]]
when = { tier = "deep" }
route_to = "hint:cloud"
priority = 5

[profiles.auto.class_prompts]
instant = "One sentence."

[profiles.auto.thinking_messages]
"local:fast" = ["Thinking..."]

[profiles.closed]
mode = "reply"
reply_message = "Closed."

[[clients]]
key_env = "KEY_A"
profile = "auto"
"""


def test_every_key_of_the_rust_format_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "config.toml", RUST_FORMAT), env={})
    assert config.warnings == ()
    gateway = config.gateway
    assert (gateway.client_port, gateway.admin_port, gateway.traffic_log_capacity) == (18080, 18081, 100)
    assert gateway.log_level == "debug"
    assert gateway.request_timeout_ms == 0
    assert gateway.health_error_threshold == 0.5
    assert gateway.traffic_log_debug is True
    assert config.backends["ollama"].base_url == "http://127.0.0.1:11434"  # trailing / trimmed
    assert config.backends["ollama"].default_options == {"num_ctx": 16384}
    assert config.backends["openai-prod"].provider is Provider.OPENAI  # the default provider
    assert config.backends["router"].key_source is not None
    assert config.backends["router"].key_source.var == "ROUTER_KEY"
    assert config.tiers[0].think is False and config.tiers[0].max_context_tokens == 8192
    auto = config.profiles["auto"]
    assert auto.mode is Mode.CLASSIFY
    assert [rule.route_to for rule in auto.rules] == ["hint:cloud", "economy"]  # priority 5 first
    assert auto.class_prompts == {"instant": "One sentence."}
    assert auto.thinking_messages == {"local:fast": ["Thinking..."]}
    assert auto.classifier_context == 3
    assert config.profiles["closed"].reply_message == "Closed."
    assert config.clients[0].key_env == "KEY_A"


def test_gateway_section_may_be_absent_and_defaults_apply() -> None:
    config = load(BASE.replace('[gateway]\nclient_port = 8080\nadmin_host = "127.0.0.1"\n', ""))
    assert config.gateway == GatewayConfig()
    assert config.gateway.client_port == 8080
    assert config.gateway.admin_port == 8081
    assert config.gateway.traffic_log_capacity == 500
    assert config.gateway.request_timeout_ms == 120_000
    assert config.gateway.max_retries is None


def test_mode_and_provider_strings() -> None:
    assert [Mode(value) for value in ("dispatch", "escalate", "classify", "reply")] == list(Mode)
    assert str(Provider.OPENROUTER) == "openrouter"
    assert Provider("anthropic") is Provider.ANTHROPIC
    assert load(BASE).profiles["default"].mode is Mode.DISPATCH  # the default mode


def test_provider_must_be_lowercase_but_open_router_is_a_synonym() -> None:
    problems = problems_of(BASE.replace('provider = "ollama"', 'provider = "Ollama"'))
    assert problems == [
        'backends.ollama.provider: expected one of "openai", "openrouter", "ollama", "anthropic", '
        '"demo", got "Ollama" (did you mean "ollama"?)'
    ]
    config = load(BASE.replace('provider = "ollama"', 'provider = "open_router"'))
    assert config.backends["ollama"].provider is Provider.OPENROUTER
    assert any("synonym" in warning and "openrouter" in warning for warning in config.warnings)


def test_resolve_tier_by_name_alias_and_unknown() -> None:
    config = load(BASE)
    assert config.resolve_tier("local:deep") is config.tiers[1]
    assert config.resolve_tier("hint:fast") is config.tiers[0]
    assert config.resolve_tier("nope") is None


def test_profile_lookup_falls_back_to_default() -> None:
    config = load(BASE + '\n[profiles.other]\nclassifier = "local:deep"\n')
    assert config.profile_or_default("other") is config.profiles["other"]
    assert config.profile_or_default("unknown") is config.profiles["default"]
    assert config.profile_or_default(None) is config.profiles["default"]
    no_profiles = load(BASE.replace('[profiles.default]\nclassifier = "local:fast"\n', ""))
    assert no_profiles.profile_or_default("anything") is None


def test_rules_sorted_by_priority_descending_and_stable() -> None:
    text = BASE.replace("[profiles.default]\n", '[profiles.default]\nmode = "classify"\n')
    for index, priority in enumerate([0, 5, 0, 5, -1]):
        text += f'\n[[profiles.default.rules]]\nwhen = {{ n = "{index}" }}\nroute_to = "local:fast"\n'
        text += f"priority = {priority}\n"
    rules = load(text).profiles["default"].rules
    assert [rule.when["n"] for rule in rules] == ["1", "3", "0", "2", "4"]


# -- conversion problems ----------------------------------------------------------------------------


def test_type_error_names_key_path_and_value() -> None:
    problems = problems_of(BASE.replace('provider = "ollama"', 'provider = "ollama"\ntimeout_ms = "30s"'))
    assert problems == ['backends.ollama.timeout_ms: expected an integer, got "30s"']


def test_bool_is_not_an_integer_and_int_is_a_float() -> None:
    problems = problems_of(BASE.replace("client_port = 8080", "client_port = true"))
    assert problems == ["gateway.client_port: expected an integer, got true"]
    config = load(BASE.replace("client_port = 8080", "health_error_threshold = 1"))
    assert config.gateway.health_error_threshold == 1.0
    assert isinstance(config.gateway.health_error_threshold, float)


def test_every_type_error_is_collected() -> None:
    text = BASE.replace(
        "client_port = 8080", 'client_port = "80"\nadmin_port = 1.5\ntraffic_log_debug = "yes"'
    )
    text = text.replace('model = "qwen3:32b"', "model = 7")
    text += '\n[[profiles.default.rules]]\nroute_to = "local:fast"\nwhen = { tier = 3 }\n'
    problems = problems_of(text)
    assert problems == [
        'gateway.client_port: expected an integer, got "80"',
        "gateway.admin_port: expected an integer, got 1.5",
        'gateway.traffic_log_debug: expected a boolean (true or false), got "yes"',
        "tiers[1].model: expected a string, got 7",
        "profiles.default.rules[0].when.tier: expected a string, got 3",
    ]


def test_required_keys_missing() -> None:
    text = BASE.replace('base_url = "http://127.0.0.1:11434"', "").replace('model = "qwen3:1.7b"', "")
    problems = problems_of(text)
    assert "backends.ollama.base_url: required key is missing" in problems
    assert "tiers[0].model: required key is missing" in problems
    # The tiers that use the broken backend are not also reported as "unknown backend".
    assert not any("unknown backend" in problem for problem in problems)


def test_wrong_section_shapes() -> None:
    problems = problems_of("clients = 5\n" + BASE.replace("[aliases]", '[aliases]\n"hint:x" = 3'))
    assert 'aliases."hint:x": expected a tier name (a string), got 3' in problems
    assert "clients: expected an array of tables ([[clients]]), got 5" in problems


def test_unknown_keys_warn_with_suggestion() -> None:
    text = BASE.replace('provider = "ollama"', 'provider = "ollama"\ntimout_ms = 5') + "\n[gatewya]\n"
    config = load(text)
    assert 'backends.ollama.timout_ms: unknown key, ignored (did you mean "timeout_ms"?)' in config.warnings
    assert 'gatewya: unknown key, ignored (did you mean "gateway"?)' in config.warnings


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    config = load(BASE.replace("[gateway]", "[gateway]\nzzz = 1"))
    assert config.warnings == ("gateway.zzz: unknown key, ignored",)


def test_key_paths_quote_non_bare_keys() -> None:
    text = BASE + '\n[profiles."ha:auto"]\nclassifier = "local:fast"\nclassifier_timeout_ms = "x"\n'
    assert problems_of(text) == ['profiles."ha:auto".classifier_timeout_ms: expected an integer, got "x"']


def test_parse_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[gateway\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"parsing {path}: ")
    assert str(path) in str(caught.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reading"):
        load_config(tmp_path / "absent.toml", env={})


def test_config_error_str_lists_every_problem_one_per_line() -> None:
    error = ConfigError(["a: one", "b: two"], source="x.toml")
    assert str(error).splitlines() == ["config x.toml: 2 problems", "  - a: one", "  - b: two"]


# -- deep merge ---------------------------------------------------------------------------------


def test_deep_merge_tables_recurse_and_overlay_wins() -> None:
    base = {"gateway": {"client_port": 1, "admin_port": 2}, "x": 1}
    merged = deep_merge(base, {"gateway": {"client_port": 9, "log_level": "info"}, "x": {"y": 1}})
    assert merged == {"gateway": {"client_port": 9, "admin_port": 2, "log_level": "info"}, "x": {"y": 1}}
    assert base == {"gateway": {"client_port": 1, "admin_port": 2}, "x": 1}  # inputs untouched


def test_deep_merge_same_name_array_item_replaced_in_place() -> None:
    base = {"tiers": [{"name": "a", "model": "m1", "think": True}, {"name": "b", "model": "m2"}]}
    merged = deep_merge(base, {"tiers": [{"name": "a", "model": "m9"}, {"name": "c", "model": "m3"}]})
    assert merged["tiers"] == [
        {"name": "a", "model": "m9"},
        {"name": "b", "model": "m2"},
        {"name": "c", "model": "m3"},
    ]


def test_deep_merge_unnamed_arrays_concatenate() -> None:
    base = {"clients": [{"key_env": "A", "profile": "p"}], "list": [1, 2]}
    merged = deep_merge(base, {"clients": [{"key_env": "A", "profile": "p"}], "list": [2]})
    assert merged["clients"] == [{"key_env": "A", "profile": "p"}] * 2
    assert merged["list"] == [1, 2, 2]


def test_deep_merge_type_mismatch_overlay_wins() -> None:
    assert deep_merge({"a": [1]}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert deep_merge({"a": {"b": 1}}, {"a": 3}) == {"a": 3}


# -- conf.d -------------------------------------------------------------------------------------


def test_conf_d_overrides_merge_in_sorted_order(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE)
    write(tmp_path / "conf.d" / "20-later.toml", '[backends.ollama]\nbase_url = "http://10.0.0.2:11434"\n')
    write(
        tmp_path / "conf.d" / "10-local.toml",
        """
        [backends.ollama]
        base_url = "http://10.0.0.1:11434"
        timeout_ms = 9000

        [[tiers]]
        name = "local:fast"
        backend = "ollama"
        model = "replaced"

        [[tiers]]
        name = "local:new"
        backend = "ollama"
        model = "added"
        """,
    )
    write(tmp_path / "conf.d" / "notes.txt", "not toml")
    config = load_config(main, env={})
    assert config.backends["ollama"].base_url == "http://10.0.0.2:11434"
    assert config.backends["ollama"].timeout_ms == 9000
    assert [(tier.name, tier.model) for tier in config.tiers] == [
        ("local:fast", "replaced"),
        ("local:deep", "qwen3:32b"),
        ("local:new", "added"),
    ]


def test_conf_d_clients_are_concatenated(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE + '\n[[clients]]\nkey_env = "A"\nprofile = "default"\n')
    write(tmp_path / "conf.d" / "clients.toml", '[[clients]]\nkey_env = "B"\nprofile = "default"\n')
    assert [client.key_env for client in load_config(main, env={}).clients] == ["A", "B"]


def test_missing_conf_d_is_fine(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "config.toml", BASE), env={}).backends["ollama"]


def test_conf_d_parse_errors_are_all_reported(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE)
    write(tmp_path / "conf.d" / "a.toml", "= broken")
    write(tmp_path / "conf.d" / "b.toml", "[x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(main, env={})
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        f"parsing {tmp_path / 'conf.d' / 'a.toml'}",
        f"parsing {tmp_path / 'conf.d' / 'b.toml'}",
    ]


# -- profiles directory --------------------------------------------------------------------------


def test_profile_file_named_by_stem(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE)
    write(tmp_path / "profiles" / "economy.toml", 'mode = "escalate"\nclassifier = "local:fast"\n')
    config = load_config(main, env={})
    assert config.profiles["economy"].mode is Mode.ESCALATE
    assert config.profiles["economy"].name == "economy"


def test_profile_file_name_key_overrides_stem(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE)
    write(tmp_path / "profiles" / "ha-auto_fast.toml", 'name = "ha-auto:fast"\nclassifier = "local:fast"\n')
    config = load_config(main, env={})
    assert "ha-auto:fast" in config.profiles
    assert "ha-auto_fast" not in config.profiles
    assert config.profiles["ha-auto:fast"].name == "ha-auto:fast"
    assert config.warnings == ()


def test_profile_file_beats_inline_profile_with_warning(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        BASE.replace("[profiles.default]\n", '[profiles.default]\nsystem_prompt = "inline"\n'),
    )
    write(tmp_path / "profiles" / "default.toml", 'classifier = "local:deep"\nsystem_prompt = "from file"\n')
    config = load_config(main, env={})
    assert config.profiles["default"].system_prompt == "from file"
    assert config.profiles["default"].classifier == "local:deep"
    assert any("replaces the profile defined in the config" in warning for warning in config.warnings)


def test_missing_profile_dir_is_fine_and_custom_dir_is_used(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE)
    assert load_config(main, env={}).warnings == ()
    custom = write(tmp_path / "c2" / "config.toml", BASE.replace("client_port = 8080", 'profile_dir = "p"'))
    write(tmp_path / "c2" / "p" / "x.toml", 'classifier = "local:fast"\n')
    assert "x" in load_config(custom, env={}).profiles
    absolute = write(
        tmp_path / "c3" / "config.toml",
        BASE.replace("client_port = 8080", f'profile_dir = "{tmp_path / "c2" / "p"}"'),
    )
    assert "x" in load_config(absolute, env={}).profiles


def test_configured_profile_dir_that_does_not_exist_warns(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", BASE.replace("client_port = 8080", 'profile_dir = "profils"'))
    (warning,) = load_config(main, env={}).warnings
    assert warning.startswith("gateway.profile_dir: directory ") and "profils" in warning


def test_profile_file_referencing_absent_tiers_is_reported_clearly(tmp_path: Path) -> None:
    # lm-gateway-rs shipped profiles that name tiers its example config lacks (reference 10.1 #24).
    main = write(tmp_path / "config.toml", BASE)
    write(
        tmp_path / "profiles" / "ha-auto.toml",
        """
        mode = "classify"
        classifier = "local:instant"

        [[rules]]
        when = { domain = "x" }
        route_to = "local:max"
        """,
    )
    problems = problems_of_file(main)
    assert any(p.startswith("profiles.ha-auto.classifier: unknown tier 'local:instant'") for p in problems)
    assert any(
        p.startswith("profiles.ha-auto.rules[0].route_to: unknown tier, alias or profile 'local:max'")
        for p in problems
    )


def problems_of_file(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value.problems


# -- find_config_path ------------------------------------------------------------------------------


def test_find_config_path_precedence(tmp_path: Path) -> None:
    cli = write(tmp_path / "cli.toml", BASE)
    from_env = write(tmp_path / "env.toml", BASE)
    default = write(tmp_path / "default.toml", BASE)
    env = {"LMG_CONFIG": str(from_env)}
    assert find_config_path(cli, env, default_path=default) == cli
    assert find_config_path(None, env, default_path=default) == from_env
    assert find_config_path(None, {}, default_path=default) == default
    assert find_config_path(None, {"LMG_CONFIG": ""}, default_path=default) == default
    assert find_config_path(None, {}, default_path=tmp_path / "absent.toml") is None


def test_explicit_paths_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config .*absent\.toml: no such file"):
        find_config_path(tmp_path / "absent.toml", {})
    with pytest.raises(ConfigError, match=r"LMG_CONFIG=.*gone\.toml: no such file"):
        find_config_path(None, {"LMG_CONFIG": str(tmp_path / "gone.toml")})
    with pytest.raises(ConfigError, match="not a regular file"):
        find_config_path(tmp_path, {})


def test_no_file_found_means_embedded_default(tmp_path: Path) -> None:
    path = find_config_path(None, {}, default_path=tmp_path / "absent.toml")
    assert load_config(path, env={}).source == EMBEDDED_SOURCE
