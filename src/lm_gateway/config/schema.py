"""Typed, immutable config objects.

Every key of the lm-gateway-rs format has a field here, so an existing ``config.toml`` loads as-is;
keys the gateway does not act on yet are still parsed, type-checked and kept. Field defaults are the
documented defaults. The loader (``loader.py``) turns a merged TOML tree into these objects and the
validator (``validate.py``) checks cross-references; nothing else builds them from raw dicts.

Secret *values* never live here: a backend holds the secret's source (env var name or file path) and
the resolved value sits in a :class:`Secret`, whose ``repr`` and ``str`` never show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Provider(StrEnum):
    OPENAI = "openai"
    OPENROUTER = "openrouter"
    OLLAMA = "ollama"
    ANTHROPIC = "anthropic"
    DEMO = "demo"


class Mode(StrEnum):
    DISPATCH = "dispatch"
    ESCALATE = "escalate"
    CLASSIFY = "classify"
    REPLY = "reply"


class Secret:
    """A resolved secret value that cannot leak through ``repr``, ``str``, f-strings or logging."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret comes from: ``{source = "env", var = "X"}`` or ``{source = "file", path = "..."}``."""

    source: str = "env"
    var: str | None = None
    path: str | None = None

    def describe(self) -> str:
        """Human text naming the source, never the value (used in ``check`` output and errors)."""
        return f"env ${self.var}" if self.source == "env" else f"file {self.path}"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    client_port: int = 8080
    admin_port: int = 8081
    client_host: str = "0.0.0.0"
    admin_host: str = "0.0.0.0"
    traffic_log_capacity: int = 500
    log_level: str | None = None
    rate_limit_rpm: int | None = None
    admin_token_env: str | None = None
    public_profile: str | None = None
    max_retries: int | None = None
    retry_delay_ms: int | None = None
    health_window: int | None = None
    health_error_threshold: float | None = None
    request_timeout_ms: int | None = 120_000
    traffic_log_debug: bool = False
    profile_dir: str | None = None
    # lm-gateway (Python) additions
    max_body_bytes: int = 16 * 1024 * 1024
    # Ollama clients (/api/tags) see the profiles as models; true adds the tiers and aliases.
    ollama_list_tiers: bool = False
    drain_timeout_ms: int = 10_000
    # Circuit breaker on top of the health window: a backend's circuit opens when its window holds
    # at least this many failures and the error rate reaches health_error_threshold; after the
    # cool-down one probe request is let through (half-open) and its outcome closes or reopens it.
    circuit_min_failures: int = 3
    circuit_cooldown_ms: int = 30_000
    # Security and limits (lm-gateway additions). Addresses (or CIDR networks) of reverse proxies whose
    # X-Forwarded-For is believed when finding a request's client IP (per-IP rate limit, traffic log).
    trusted_proxies: tuple[str, ...] = ()
    # Request bodies: deepest JSON nesting and most `messages` accepted (400 beyond).
    max_json_depth: int = 64
    max_messages: int = 10_000
    # The client port's HTTP server: request line + headers size (431 beyond), time to send a whole
    # request once its first byte arrived, and how long an idle keep-alive connection is kept.
    max_header_bytes: int = 64 * 1024
    header_timeout_ms: int = 30_000
    idle_timeout_ms: int = 75_000
    # Reload when the config file, conf.d/*.toml or the profile files change (polled).
    watch_config: bool = True
    watch_interval_ms: int = 2_000
    # OpenTelemetry: export one span per request to this OTLP/HTTP collector (e.g.
    # "http://127.0.0.1:4318"); needs the `otel` extra. None = off, at zero cost.
    otlp_endpoint: str | None = None
    # Several instances: where the state they share lives (rate-limit buckets, spend and escalation
    # budgets, circuit breakers, the recent-traffic stream). A secret like every credential (the URL
    # may hold a password): {source = "env", var = "LMG_REDIS_URL"} or {source = "file", path = ...}.
    # None = every instance keeps its own state, with no Redis client loaded.
    redis_url: SecretSource | None = None
    # Namespace of every key the gateway writes (several clusters can share one Redis).
    redis_prefix: str = "lmg"
    # How long one Redis command may take before Redis counts as unreachable (see cluster/).
    redis_timeout_ms: int = 250
    # How this instance names itself in the cluster's traffic (default: host name and process id).
    instance_name: str | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    base_url: str
    provider: Provider = Provider.OPENAI
    api_key_env: str | None = None
    api_key_secret: SecretSource | None = None
    timeout_ms: int = 30_000
    default_options: dict[str, Any] | None = None
    # lm-gateway (Python) additions
    connect_timeout_ms: int = 5_000
    max_connections: int = 256
    # Priority gate (X-LMG-Priority): at most this many calls in flight to this backend, shared by
    # every tier on it (one GPU); None = no gate. Waiters beyond queue_limit are refused with 429.
    max_concurrent: int | None = None
    queue_limit: int = 32
    # Anthropic backends: pass an Anthropic client's `anthropic-beta` header on (untouched
    # passthrough only). False keeps every beta feature (and its pricing) the operator's decision.
    pass_anthropic_beta: bool = True

    @property
    def key_source(self) -> SecretSource | None:
        """``api_key_secret`` wins over the ``api_key_env`` shorthand, as in lm-gateway-rs."""
        if self.api_key_secret is not None:
            return self.api_key_secret
        if self.api_key_env:
            return SecretSource(source="env", var=self.api_key_env)
        return None


@dataclass(frozen=True, slots=True)
class TierConfig:
    name: str
    backend: str
    model: str
    think: bool | None = None
    max_context_tokens: int | None = None
    input_cost_per_mtok: float | None = None
    output_cost_per_mtok: float | None = None


@dataclass(frozen=True, slots=True)
class RuleConfig:
    route_to: str
    when: dict[str, str] = field(default_factory=dict)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SufficiencyConfig:
    """How escalate mode judges an answer (``[profiles.<name>.sufficiency]``).

    ``checks`` lists the strategies that run, in order; an answer is sufficient when every one
    passes: ``heuristics`` (empty, truncated, too short, refusal or uncertainty phrase, invalid JSON
    when JSON was asked for; a tool-call answer always passes), ``logprobs`` (a low quantile of the
    answer's token probabilities; abstains when the backend returns none) and ``judge`` (the
    ``judge`` tier grades the answer from 0 to 10).
    """

    checks: tuple[str, ...] = ("heuristics",)
    min_chars: int = 20
    refusal_phrases: tuple[str, ...] | None = None  # None = the built-in list
    logprob_quantile: float = 0.1
    logprob_threshold: float = 0.3
    judge: str = ""
    judge_threshold: float = 7.0
    judge_timeout_ms: int = 10_000
    return_best: bool = True


@dataclass(frozen=True, slots=True)
class PreRouteRule:
    """A zero-call pre-router rule: every condition given must hold; the first matching rule wins.

    Text conditions look at the last user message. ``route_to`` is a tier or an alias.
    """

    route_to: str
    min_chars: int | None = None
    max_chars: int | None = None
    has_code: bool | None = None
    has_tools: bool | None = None
    has_attachments: bool | None = None
    keywords: tuple[str, ...] = ()
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    name: str
    mode: Mode = Mode.DISPATCH
    classifier: str = ""
    max_auto_tier: str = ""
    expert_requires_flag: bool = False
    rate_limit_rpm: int | None = None
    classifier_prompt: str | None = None
    classifier_think: bool | None = None
    classifier_timeout_ms: int = 10_000
    system_prompt: str | None = None
    rules: tuple[RuleConfig, ...] = ()
    class_prompts: dict[str, str] = field(default_factory=dict)
    classifier_context: int | None = None
    reply_message: str | None = None
    thinking_messages: dict[str, list[str]] = field(default_factory=dict)
    # Ollama-protocol clients get errors as an assistant message with HTTP 200 (Home Assistant shows
    # only message text); off = real HTTP errors in Ollama's shape.
    ollama_errors_as_message: bool = False
    # lm-gateway (Python) addition: route unknown model names to the `classifier` tier (the
    # lm-gateway-rs behaviour) instead of answering 404.
    unknown_model_fallback: bool = False
    # lm-gateway (Python) additions for the routing modes.
    failover: bool = False
    classifier_fallback: str = ""
    classifier_cache_size: int = 1024
    classifier_every_turn: bool = False
    pre_router: tuple[PreRouteRule, ...] = ()
    sufficiency: SufficiencyConfig = field(default_factory=SufficiencyConfig)
    max_escalations: int | None = None
    cost_ceiling: float | None = None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    key_env: str
    profile: str
    # lm-gateway (Python) addition: the name shown in logs and traffic (defaults to key_env).
    name: str | None = None
    # Extra profiles this key may name as its `model` (besides its own), and its budget of
    # automatic step-ups up the ladder per minute (escalations, label/rule/context moves up).
    profiles: tuple[str, ...] = ()
    max_escalations_per_minute: int | None = None
    # Requests per minute for this key (a token bucket, like gateway.rate_limit_rpm), and streamed
    # answers it may have open at once; None = no limit.
    rate_limit_rpm: int | None = None
    max_concurrent_streams: int | None = None
    # USD this key may spend per UTC day (from the tiers' prices); past it, 429 until midnight UTC.
    max_spend_usd_per_day: float | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.key_env


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated config. Built once per load; a reload builds a new one and swaps it."""

    gateway: GatewayConfig
    backends: dict[str, BackendConfig]
    tiers: tuple[TierConfig, ...]
    aliases: dict[str, str]
    profiles: dict[str, ProfileConfig]
    clients: tuple[ClientConfig, ...]
    # Where it came from ("embedded default" or a path) and the non-fatal findings of the load.
    source: str = "embedded default"
    warnings: tuple[str, ...] = ()
    # Resolved secrets, by backend name (only backends whose key resolved), by client index and for
    # the admin token. Kept out of every view; ``Secret`` hides the value from repr/str.
    backend_keys: dict[str, Secret] = field(default_factory=dict)
    client_keys: tuple[tuple[ClientConfig, Secret], ...] = ()
    admin_token: Secret | None = None
    redis_url: Secret | None = None
    missing_secrets: tuple[str, ...] = ()

    def tier(self, name: str) -> TierConfig | None:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return None

    def tier_index(self, name: str) -> int | None:
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return index
        return None

    def resolve_tier(self, name: str) -> TierConfig | None:
        """A tier by alias or by name. The alias is checked first (so it shadows a same-named
        tier), and only one level deep: validation guarantees every alias names a tier."""
        return self.tier(self.aliases.get(name, name))

    def profile_or_default(self, name: str | None) -> ProfileConfig | None:
        """The named profile, else the one named ``default``, else None (lm-gateway-rs lookup)."""
        if name is not None and name in self.profiles:
            return self.profiles[name]
        return self.profiles.get("default")
