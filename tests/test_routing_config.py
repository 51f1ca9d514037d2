"""The routing keys in the config: each bad value is reported with its key path (all at once), keys
set where their mode never reads them are warned about, and the admin view shows the new settings
without changing the view of configs that do not use them."""

from __future__ import annotations

import pytest

from lm_gateway.config import ConfigError, load_config_text, redacted_view
from lm_gateway.router import build_table

from .test_routing_kit import LADDER

QUIET = '[gateway]\nadmin_host = "127.0.0.1"\n'
CLS = 'classifier = "local:fast"\n'


def load(toml: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of loading ``LADDER + toml``."""
    try:
        config = load_config_text(LADDER + toml, env={"K": "k"})
    except ConfigError as err:
        return list(err.problems), []
    return [], list(config.warnings)


def prof(mode: str, body: str = "", tail: str = "") -> str:
    return f'{QUIET}[profiles.p]\nmode = "{mode}"\n{body}\n{tail}'


def pre(body: str) -> str:
    return f"[[profiles.p.pre_router]]\n{body}\n"


def suff(body: str) -> str:
    return f"[profiles.p.sufficiency]\n{body}\n"


def client(body: str, name: str = "", key: str = "K") -> str:
    named = f'name = "{name}"\n' if name else ""
    return f'[[clients]]\n{named}key_env = "{key}"\nprofile = "p"\n{body}\n'


BACKEND = '[backends.b]\nbase_url = "http://b"\n'


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[gateway]\ncircuit_min_failures = 0\n", "gateway.circuit_min_failures: must be at least 1"),
        ("[gateway]\ncircuit_cooldown_ms = 0\n", "gateway.circuit_cooldown_ms: must be at least 1"),
        (BACKEND + "max_concurrent = 0\n", "backends.b.max_concurrent: must be at least 1"),
        (BACKEND + "queue_limit = -1\n", "backends.b.queue_limit: must be at least 0"),
        (
            prof("classify", CLS + 'classifier_fallback = "local:fats"'),
            "profiles.p.classifier_fallback: unknown tier",
        ),
        (
            prof("classify", CLS + "classifier_cache_size = -1"),
            "profiles.p.classifier_cache_size: must be at least 0",
        ),
        (prof("escalate", "max_escalations = -1"), "profiles.p.max_escalations: must be at least 0"),
        (
            prof("dispatch", "cost_ceiling = -0.5"),
            "profiles.p.cost_ceiling: must be a finite number of USD >= 0",
        ),
        (
            prof("escalate", tail=suff('checks = ["vibes"]')),
            "profiles.p.sufficiency.checks[0]: unknown check 'vibes'",
        ),
        (
            prof("escalate", tail=suff('checks = ["judge"]')),
            "profiles.p.sufficiency.judge: is required when checks",
        ),
        (
            prof("escalate", tail=suff('checks = ["judge"]\njudge = "x"')),
            "profiles.p.sufficiency.judge: unknown tier",
        ),
        (
            prof("escalate", tail=suff("logprob_threshold = 2")),
            "profiles.p.sufficiency.logprob_threshold: must be",
        ),
        (
            prof("escalate", tail=suff("judge_threshold = 11")),
            "profiles.p.sufficiency.judge_threshold: must be",
        ),
        (
            prof("classify", CLS, pre('route_to = "x"\nmin_chars = 1')),
            "profiles.p.pre_router[0].route_to: unknown",
        ),
        (
            prof("classify", CLS, pre('route_to = "local:fast"\nregex = "("')),
            "profiles.p.pre_router[0].regex: is not",
        ),
        (
            prof("classify", CLS, pre('route_to = "local:fast"\nmin_chars = 9\nmax_chars = 1')),
            "profiles.p.pre_router[0]: min_chars (9) is above max_chars (1)",
        ),
        (prof("classify"), "profiles.p.classifier: is required in classify mode"),
        (prof("dispatch", tail=client('profiles = ["q"]')), "clients[0].profiles[0]: unknown profile 'q'"),
        (
            prof("dispatch", tail=client("max_escalations_per_minute = -1")),
            "clients[0].max_escalations_per_minute: must be at least 0",
        ),
        (
            prof("dispatch", tail=client("", "a") + client('profiles = ["p"]', "a", "K2")),
            "clients[1].name: 'a' also names clients[0]",
        ),
    ],
)
def test_bad_routing_keys_are_errors_with_their_key_path(toml: str, problem: str) -> None:
    errors, _ = load(toml)
    assert any(error.startswith(problem) for error in errors), errors


@pytest.mark.parametrize(
    ("toml", "warning"),
    [
        (prof("dispatch", "max_escalations = 2"), "profiles.p: sufficiency/max_escalations"),
        (prof("dispatch", tail=pre('route_to = "local:fast"\nmin_chars = 1')), "profiles.p: pre_router"),
        (prof("escalate", "failover = true"), "profiles.p: failover"),
        (prof("dispatch", 'classifier_fallback = "local:fast"'), "profiles.p: classifier_fallback"),
        (prof("escalate", tail=suff('judge = "local:fast"')), "profiles.p.sufficiency.judge: is unused"),
        (prof("classify", CLS, pre('route_to = "local:fast"')), "profiles.p.pre_router[0]: has no condition"),
    ],
)
def test_keys_their_mode_never_reads_are_warned_about(toml: str, warning: str) -> None:
    errors, warnings = load(toml)
    assert not errors and any(w.startswith(warning) for w in warnings), warnings


def test_a_pre_router_only_classify_profile_needs_no_classifier() -> None:
    assert load(prof("classify", tail=pre('route_to = "local:fast"\nmax_chars = 9'))) == ([], [])


def test_an_lm_gateway_rs_classify_profile_loads_unchanged() -> None:
    # The lm-gateway-rs keys (reference 2.7) keep their meaning; none of the new keys is needed.
    rs = """
[gateway]
admin_host = "127.0.0.1"
max_retries = 2
retry_delay_ms = 200
health_window = 10
health_error_threshold = 0.7
request_timeout_ms = 60000

[profiles.ha]
mode = "classify"
classifier = "local:instant"
max_auto_tier = "cloud:deep"
classifier_prompt = "Reply with instant, fast or deep."
classifier_think = false
classifier_timeout_ms = 5000
classifier_context = 2

[[profiles.ha.rules]]
when = { intent = "greeting" }
route_to = "local:instant"
priority = 100

[profiles.ha.class_prompts]
greeting = "Be brief."

[profiles.ha.thinking_messages]
"cloud:deep" = ["One moment..."]
"""
    config = load_config_text(LADDER + rs)
    assert not config.warnings
    table = build_table(config)
    plan = table.plans["ha"]
    assert plan.prompt == "Reply with instant, fast or deep."
    assert plan.ceiling == 2 and plan.classifier is not None and plan.classifier.name == "local:instant"
    assert table.retry.retries == 2 and table.request_timeout_s == 60
    assert table.health is not None and table.health.window == 10


def test_the_admin_view_shows_gates_and_client_routing_only_when_set() -> None:
    toml = """
[backends.gpu]
base_url = "http://gpu"
max_concurrent = 2

[profiles.p]
mode = "escalate"
[profiles.p.sufficiency]
checks = ["heuristics", "judge"]
judge = "local:fast"

[[clients]]
key_env = "K"
profile = "p"
profiles = ["p"]
max_escalations_per_minute = 5
"""
    view = redacted_view(load_config_text(LADDER + toml, env={"K": "k"}))
    backends = {backend["name"]: backend for backend in view["backends"]}
    assert backends["gpu"]["max_concurrent"] == 2 and backends["gpu"]["queue_limit"] == 32
    assert "max_concurrent" not in backends["mock"]
    assert view["clients"][0]["profiles"] == ["p"] and view["clients"][0]["max_escalations_per_minute"] == 5
    assert view["profiles"]["p"]["sufficiency"]["checks"] == ["heuristics", "judge"]
    assert view["profiles"]["p"]["pre_router"] == []
