"""Config validation: every check, each with its key path, and all problems reported at once."""

from __future__ import annotations

import textwrap

import pytest

from lm_gateway.config import Config, ConfigError, load_config_text
from lm_gateway.config.validate import find_cascade_cycles, url_problems

BASE = """
[gateway]
admin_host = "127.0.0.1"

[backends.ollama]
provider = "ollama"
base_url = "http://127.0.0.1:11434"

[backends.openrouter]
provider = "openrouter"
base_url = "https://openrouter.ai/api"
api_key_env = "OPENROUTER_API_KEY"

[[tiers]]
name = "local:fast"
backend = "ollama"
model = "qwen3:1.7b"

[[tiers]]
name = "cloud:big"
backend = "openrouter"
model = "big"

[aliases]
"hint:fast" = "local:fast"

[profiles.default]
classifier = "local:fast"
"""


def load(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), env={})


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value.problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_base_is_valid() -> None:
    assert load(BASE).warnings == ()


def test_every_problem_is_reported_at_once_with_key_paths() -> None:
    text = BASE.replace('backend = "openrouter"', 'backend = "olama"')
    text = text.replace('"hint:fast" = "local:fast"', '"hint:fast" = "local:fats"')
    text = text.replace(
        'admin_host = "127.0.0.1"', 'admin_host = "127.0.0.1"\nclient_port = 70000\npublic_profile = "nobody"'
    )
    text = text.replace('base_url = "http://127.0.0.1:11434"', 'base_url = "ftp://127.0.0.1"')
    text += """
    [profiles.auto]
    mode = "classify"
    classifier = "local:huge"
    max_auto_tier = "cloud:bigger"

    [[profiles.auto.rules]]
    when = { tier = "deep" }
    route_to = "nowhere"

    [[clients]]
    key_env = "K"
    profile = "ghost"
    """
    problems = problems_of(text)
    expected_starts = [
        "gateway.client_port: must be between 0 and 65535, got 70000",
        "gateway.public_profile: unknown profile 'nobody'",
        "backends.ollama.base_url: must start with http:// or https://",
        "tiers[1].backend: unknown backend 'olama' (known: ollama, openrouter); did you mean 'ollama'?",
        "aliases.\"hint:fast\": unknown tier 'local:fats'",
        "profiles.auto.classifier: unknown tier 'local:huge'",
        "profiles.auto.max_auto_tier: unknown tier 'cloud:bigger'",
        "profiles.auto.rules[0].route_to: unknown tier, alias or profile 'nowhere'",
        "clients[0].profile: unknown profile 'ghost' (known: auto, default)",
    ]
    assert len(problems) == len(expected_starts), problems
    for problem, start in zip(problems, expected_starts, strict=True):
        assert problem.startswith(start), (problem, start)


def test_conversion_and_validation_problems_are_reported_together() -> None:
    text = BASE.replace('model = "big"', 'model = "big"\nthink = "yes"').replace(
        'classifier = "local:fast"', 'classifier = "local:slow"'
    )
    assert problems_of(text) == [
        'tiers[1].think: expected a boolean (true or false), got "yes"',
        "profiles.default.classifier: unknown tier 'local:slow' (known: cloud:big, local:fast); "
        "did you mean 'local:fast'?",
    ]


# -- references ---------------------------------------------------------------------------------


def test_tier_with_unknown_backend() -> None:
    assert only_problem(BASE.replace('backend = "openrouter"', 'backend = "nope"')).startswith(
        "tiers[1].backend: unknown backend 'nope' (known: ollama, openrouter)"
    )


def test_alias_to_unknown_tier_and_alias_chains() -> None:
    assert only_problem(BASE.replace('= "local:fast"\n\n[profiles', '= "x"\n\n[profiles')).startswith(
        "aliases.\"hint:fast\": unknown tier 'x'"
    )
    chained = BASE.replace(
        '"hint:fast" = "local:fast"', '"hint:fast" = "local:fast"\n"hint:quick" = "hint:fast"'
    )
    assert only_problem(chained) == (
        "aliases.\"hint:quick\": 'hint:fast' is an alias, not a tier; aliases cannot chain, "
        "point it at 'local:fast' directly"
    )


def test_alias_shadowing_a_tier_warns() -> None:
    config = load(BASE.replace('"hint:fast" = "local:fast"', '"local:fast" = "cloud:big"'))
    assert config.warnings == (
        "aliases.\"local:fast\": shadows the tier of the same name (requests for it go to 'cloud:big')",
    )


def test_profile_classifier_must_be_a_tier() -> None:
    assert only_problem(BASE.replace('classifier = "local:fast"', 'classifier = "hint:fast"')).startswith(
        "profiles.default.classifier: unknown tier 'hint:fast'"
    )


def test_classifier_required_for_classify_only() -> None:
    for mode in ("dispatch", "escalate"):
        config = load(BASE.replace('classifier = "local:fast"', f'mode = "{mode}"'))
        assert config.profiles["default"].classifier == ""
    assert only_problem(BASE.replace('classifier = "local:fast"', 'mode = "classify"')) == (
        "profiles.default.classifier: is required in classify mode (the tier that classifies requests)"
    )


def test_reply_profiles_skip_the_classifier_check() -> None:
    config = load(BASE.replace('classifier = "local:fast"', 'mode = "reply"\nclassifier = "whatever"'))
    assert config.profiles["default"].classifier == "whatever"


def test_max_auto_tier_must_be_empty_or_a_tier() -> None:
    assert load(BASE.replace('classifier = "local:fast"', 'classifier = "local:fast"\nmax_auto_tier = ""'))
    problem = only_problem(
        BASE.replace('classifier = "local:fast"', 'classifier = "local:fast"\nmax_auto_tier = "big"')
    )
    assert problem.startswith("profiles.default.max_auto_tier: unknown tier 'big'")


def test_rule_targets_may_be_tier_alias_or_profile() -> None:
    text = BASE + '\n[profiles.other]\nclassifier = "local:fast"\n'
    for target in ("local:fast", "hint:fast", "other"):
        rule = f'\n[[profiles.default.rules]]\nwhen = {{ a = "b" }}\nroute_to = "{target}"\n'
        assert load(text.replace("[profiles.other]", rule + "\n[profiles.other]"))
    empty = BASE + '\n[[profiles.default.rules]]\nwhen = { a = "b" }\nroute_to = ""\n'
    assert (
        only_problem(empty)
        == "profiles.default.rules[0].route_to: must not be empty (a tier, alias or profile name)"
    )


def test_rule_with_empty_when_warns() -> None:
    config = load(BASE + '\n[[profiles.default.rules]]\nroute_to = "local:fast"\n')
    assert config.warnings == (
        "profiles.default.rules[0].when: is empty, so this rule matches every request",
    )


def test_public_profile_must_exist() -> None:
    text = BASE.replace('admin_host = "127.0.0.1"', 'admin_host = "127.0.0.1"\npublic_profile = "defualt"')
    assert only_problem(text) == (
        "gateway.public_profile: unknown profile 'defualt' (known: default); did you mean 'default'?"
    )


def test_client_profile_must_exist_and_key_env_is_required() -> None:
    problems = problems_of(BASE + '\n[[clients]]\nkey_env = ""\nprofile = "economy"\n')
    assert problems == [
        "clients[0].key_env: must name the env var holding this client's key",
        "clients[0].profile: unknown profile 'economy' (known: default)",
    ]


def test_one_key_env_cannot_map_to_two_profiles() -> None:
    text = BASE + '\n[profiles.b]\nclassifier = "local:fast"\n'
    text += '\n[[clients]]\nkey_env = "K"\nprofile = "default"\n\n[[clients]]\nkey_env = "K"\nprofile = "b"\n'
    assert only_problem(text) == (
        "clients[1].key_env: K is also bound to profile 'default'; one key can map to one profile only"
    )


def test_thinking_messages_keys_must_be_tiers() -> None:
    text = BASE + '\n[profiles.default.thinking_messages]\n"local:fast" = ["hm"]\n"local:slow" = ["..."]\n'
    assert only_problem(text).startswith(
        "profiles.default.thinking_messages.\"local:slow\": unknown tier 'local:slow'"
    )


def test_class_prompts_keys_are_free_but_misplaced_profile_keys_warn() -> None:
    # lm-gateway-rs shipped a profile whose system_prompt sat under [class_prompts] (10.1 #23).
    text = BASE + '\n[profiles.default.class_prompts]\nanything = "x"\nsystem_prompt = "Be nice."\n'
    config = load(text)
    assert config.profiles["default"].system_prompt is None
    (warning,) = config.warnings
    assert warning.startswith("profiles.default.class_prompts.system_prompt: looks like the profile key")


def test_duplicate_tier_names_rejected() -> None:
    text = BASE + '\n[[tiers]]\nname = "local:fast"\nbackend = "ollama"\nmodel = "other"\n'
    assert only_problem(text) == "tiers[2].name: duplicate tier name 'local:fast' (also tiers[0]); rename one"


def test_empty_tier_list_needs_reply_only_profiles() -> None:
    no_tiers = """
    [gateway]
    admin_host = "127.0.0.1"

    [profiles.default]
    mode = "dispatch"

    [profiles.closed]
    mode = "reply"
    """
    assert only_problem(no_tiers).startswith(
        "tiers: no [[tiers]] defined, but profiles default route requests"
    )
    assert "add a [[tiers]] entry" in only_problem(no_tiers)
    reply_only = no_tiers.replace('mode = "dispatch"', 'mode = "reply"')
    assert load(reply_only).tiers == ()
    nothing = '[gateway]\nadmin_host = "127.0.0.1"\n'
    assert only_problem(nothing).startswith("tiers: no [[tiers]] and no [profiles.*] defined")


def test_no_profiles_warns() -> None:
    config = load(BASE.replace('[profiles.default]\nclassifier = "local:fast"\n', ""))
    assert config.warnings == ("profiles: none defined; add [profiles.default] (requests use 'default')",)


# -- cascades -----------------------------------------------------------------------------------


def cascade(edges: dict[str, list[str]]) -> str:
    text = BASE
    for name, targets in edges.items():
        text += f'\n[profiles.{name}]\nmode = "classify"\nclassifier = "local:fast"\n'
        for target in targets:
            text += f'\n[[profiles.{name}.rules]]\nwhen = {{ x = "y" }}\nroute_to = "{target}"\n'
    return text


@pytest.mark.parametrize(
    "edges",
    [
        {"a": ["b"], "b": []},
        {"a": ["b"], "b": ["c"], "c": []},
        {"a": ["local:fast"]},
        {"a": ["b", "c"], "b": ["c"], "c": []},
    ],
)
def test_acyclic_cascades_load(edges: dict[str, list[str]]) -> None:
    assert load(cascade(edges))


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ({"a": ["a"]}, "profiles.a.rules[0].route_to: circular profile cascade: a → a"),
        ({"a": ["b"], "b": ["a"]}, "profiles.a.rules[0].route_to: circular profile cascade: a → b → a"),
        (
            {"a": ["local:fast", "b"], "b": ["c"], "c": ["a"]},
            "profiles.a.rules[1].route_to: circular profile cascade: a → b → c → a",
        ),
    ],
)
def test_cyclic_cascades_rejected(edges: dict[str, list[str]], message: str) -> None:
    assert only_problem(cascade(edges)) == f"{message}; route one of these rules to a tier"


def test_every_distinct_cycle_reported_once() -> None:
    profiles = {
        name: _profile(targets) for name, targets in {"a": ["b", "c"], "b": ["a"], "c": ["a"]}.items()
    }
    assert find_cascade_cycles(profiles) == [["a", "b", "a"], ["a", "c", "a"]]


def _profile(targets: list[str]) -> object:
    from lm_gateway.config import ProfileConfig, RuleConfig

    return ProfileConfig(name="p", rules=tuple(RuleConfig(route_to=target) for target in targets))


# -- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("client_port = -1", "gateway.client_port: must be between 0 and 65535, got -1"),
        ("admin_port = 65536", "gateway.admin_port: must be between 0 and 65535, got 65536"),
        ("traffic_log_capacity = 0", "gateway.traffic_log_capacity: must be at least 1, got 0"),
        ("max_retries = 11", "gateway.max_retries: must be between 0 and 10, got 11"),
        (
            "health_error_threshold = 0.0",
            "gateway.health_error_threshold: must be above 0 and at most 1, got 0",
        ),
        (
            "health_error_threshold = 1.5",
            "gateway.health_error_threshold: must be above 0 and at most 1, got 1.5",
        ),
        (
            "health_error_threshold = nan",
            "gateway.health_error_threshold: must be above 0 and at most 1, got nan",
        ),
        ("max_body_bytes = 1023", "gateway.max_body_bytes: must be at least 1024, got 1023"),
        ("request_timeout_ms = -5", "gateway.request_timeout_ms: must be at least 0 (0 disables it), got -5"),
        ("drain_timeout_ms = 0", "gateway.drain_timeout_ms: must be at least 1, got 0"),
        ("rate_limit_rpm = -1", "gateway.rate_limit_rpm: must be at least 0 (0 disables the limit), got -1"),
        (
            "health_window = -1",
            "gateway.health_window: must be at least 0 (0 disables health tracking), got -1",
        ),
        ("retry_delay_ms = -1", "gateway.retry_delay_ms: must be at least 0, got -1"),
        (
            'log_level = "verbose"',
            "gateway.log_level: must be one of debug, info, warning, error, critical, got 'verbose'",
        ),
        ('client_host = ""', 'gateway.client_host: must not be empty (e.g. "127.0.0.1" or "0.0.0.0")'),
    ],
)
def test_gateway_ranges(line: str, message: str) -> None:
    assert (
        only_problem(BASE.replace('admin_host = "127.0.0.1"', f'admin_host = "127.0.0.1"\n{line}')) == message
    )


@pytest.mark.parametrize(
    "line",
    [
        "client_port = 0",
        "admin_port = 65535",
        "request_timeout_ms = 0",
        "health_error_threshold = 1.0",
        "max_retries = 0",
        "max_retries = 10",
        "max_body_bytes = 1024",
        "health_window = 0",
        "rate_limit_rpm = 0",
    ],
)
def test_gateway_range_edges_accepted(line: str) -> None:
    assert load(BASE.replace('admin_host = "127.0.0.1"', f'admin_host = "127.0.0.1"\n{line}'))


def test_log_level_is_case_insensitive_and_normalised() -> None:
    for written, stored in (
        ("INFO", "info"),
        ("Warning", "warning"),
        ("warn", "warning"),
        ("trace", "debug"),
    ):
        text = BASE.replace('admin_host = "127.0.0.1"', f'admin_host = "127.0.0.1"\nlog_level = "{written}"')
        assert load(text).gateway.log_level == stored


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("timeout_ms = 0", "backends.ollama.timeout_ms: must be at least 1, got 0"),
        ("connect_timeout_ms = 0", "backends.ollama.connect_timeout_ms: must be at least 1, got 0"),
        ("max_connections = 0", "backends.ollama.max_connections: must be at least 1, got 0"),
    ],
)
def test_backend_ranges(line: str, message: str) -> None:
    assert only_problem(BASE.replace('provider = "ollama"', f'provider = "ollama"\n{line}')) == message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_context_tokens = 0", "tiers[0].max_context_tokens: must be at least 1, got 0"),
        ("input_cost_per_mtok = -1.0", "tiers[0].input_cost_per_mtok: must be a finite number >= 0, got -1"),
        (
            "output_cost_per_mtok = inf",
            "tiers[0].output_cost_per_mtok: must be a finite number >= 0, got inf",
        ),
    ],
)
def test_tier_ranges(line: str, message: str) -> None:
    assert only_problem(BASE.replace('model = "qwen3:1.7b"', f'model = "qwen3:1.7b"\n{line}')) == message


def test_tier_model_must_not_be_empty() -> None:
    assert only_problem(BASE.replace('model = "big"', 'model = ""')) == (
        "tiers[1].model: must not be empty (the model name sent to the backend)"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "classifier_context = -1",
            "profiles.default.classifier_context: must be at least 0 (0 skips classification), got -1",
        ),
        ("classifier_timeout_ms = 0", "profiles.default.classifier_timeout_ms: must be at least 1, got 0"),
        (
            "rate_limit_rpm = -2",
            "profiles.default.rate_limit_rpm: must be at least 0 (0 disables the limit), got -2",
        ),
    ],
)
def test_profile_ranges(line: str, message: str) -> None:
    assert (
        only_problem(BASE.replace('classifier = "local:fast"', f'classifier = "local:fast"\n{line}'))
        == message
    )


def test_classifier_context_zero_is_allowed() -> None:
    text = BASE.replace('classifier = "local:fast"', 'classifier = "local:fast"\nclassifier_context = 0')
    assert load(text).profiles["default"].classifier_context == 0


# -- base_url -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host", "must start with http:// or https://"),
        ("127.0.0.1:11434", "must start with http:// or https://"),
        ("http://", "has no host (expected e.g. http://127.0.0.1:11434)"),
        (
            "http://user:pw@host",
            "must not contain credentials (user:password@); put the key in api_key_env or api_key_secret",
        ),
        ("http://host/a\r\nX-Evil: 1", "must not contain whitespace or line breaks"),
        ("http://ho st", "must not contain whitespace or line breaks"),
        ("http://host/#frag", "must not contain a # fragment"),
        ("http://host/?a=1", "must not contain a query string (?...)"),
        ("http://host:99999", "is not a valid URL (check the host and port)"),
        ("http://host:port", "is not a valid URL (check the host and port)"),
    ],
)
def test_bad_base_urls(url: str, problem: str) -> None:
    assert problem in url_problems(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:11434", "https://api.example.com/prefix", "http://[::1]:8000"]
)
def test_good_base_urls(url: str) -> None:
    assert url_problems(url) == []


def test_base_url_problem_never_echoes_the_url() -> None:
    text = BASE.replace("http://127.0.0.1:11434", "http://admin:hunter2@127.0.0.1:11434")
    problem = only_problem(text)
    assert problem.startswith("backends.ollama.base_url: must not contain credentials")
    assert "hunter2" not in problem


def test_base_url_trailing_slashes_trimmed_and_v1_warned() -> None:
    config = load(BASE.replace("https://openrouter.ai/api", "https://openrouter.ai/api/v1//"))
    assert config.backends["openrouter"].base_url == "https://openrouter.ai/api/v1"
    assert config.warnings == (
        "backends.openrouter.base_url: ends with /v1, but the gateway appends the API path (/v1/...) "
        "itself; remove /v1",
    )


# -- backends and keys --------------------------------------------------------------------------


def test_secret_source_shapes() -> None:
    text = BASE.replace(
        'api_key_env = "OPENROUTER_API_KEY"', 'api_key_secret = { source = "vault", var = "X" }'
    )
    assert (
        only_problem(text)
        == 'backends.openrouter.api_key_secret.source: must be "env" or "file", got "vault"'
    )
    text = BASE.replace('api_key_env = "OPENROUTER_API_KEY"', 'api_key_secret = { source = "file" }')
    assert only_problem(text).startswith("backends.openrouter.api_key_secret.path: is required when source")
    text = BASE.replace('api_key_env = "OPENROUTER_API_KEY"', 'api_key_secret = { source = "env" }')
    assert only_problem(text).startswith("backends.openrouter.api_key_secret.var: is required when source")


def test_key_source_warnings() -> None:
    both = BASE.replace(
        'api_key_env = "OPENROUTER_API_KEY"',
        'api_key_env = "A"\napi_key_secret = { source = "env", var = "B" }',
    )
    assert load(both).warnings == (
        "backends.openrouter.api_key_env: ignored because api_key_secret is also set",
    )
    none = BASE.replace('api_key_env = "OPENROUTER_API_KEY"', "")
    assert load(none).warnings == (
        "backends.openrouter: provider openrouter needs an API key; set api_key_env or api_key_secret",
    )


def test_default_options_outside_ollama_warn() -> None:
    text = BASE.replace(
        'provider = "openrouter"', 'provider = "openrouter"\ndefault_options = { num_ctx = 1 }'
    )
    assert load(text).warnings == (
        "backends.openrouter.default_options: only used by ollama backends; ignored here",
    )


def test_admin_api_open_to_the_network_warns() -> None:
    config = load(BASE.replace('admin_host = "127.0.0.1"', 'admin_host = "0.0.0.0"'))
    assert config.warnings == (
        "gateway.admin_host: the admin API listens on 0.0.0.0 without a token; set admin_token_env "
        'or bind it to "127.0.0.1"',
    )
    with_token = BASE.replace('admin_host = "127.0.0.1"', 'admin_host = "0.0.0.0"\nadmin_token_env = "T"')
    assert load(with_token).warnings == ()
