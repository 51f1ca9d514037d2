"""Cross-reference and range checks on a converted config.

lm-gateway-rs stops at the first problem and leaves many things unchecked (route targets, the public
profile, ``max_auto_tier``, ranges, URLs), so mistakes surface as request-time failures. Here every
check runs and every problem is reported at once, each starting with its key path and saying what
would fix it. Errors make the load fail; warnings are kept on ``Config.warnings``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lm_gateway.config.convert import index_path, key_path, suggest
from lm_gateway.config.schema import (
    BackendConfig,
    ClientConfig,
    Config,
    GatewayConfig,
    Mode,
    PreRouteRule,
    ProfileConfig,
    Provider,
    SufficiencyConfig,
    TierConfig,
)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_PROFILE_FIELDS = frozenset(ProfileConfig.__dataclass_fields__)
_MAX_CYCLES_REPORTED = 20
SUFFICIENCY_CHECKS = ("heuristics", "logprobs", "judge")
# A backend host: a DNS name (ASCII letters, digits, dots, dashes, underscores) or an IP address
# (urlsplit strips the brackets of an IPv6 literal).
_HOST_OK = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")


@dataclass(frozen=True, slots=True)
class ValidationHints:
    """What the loader knows beyond the Config itself.

    ``broken``: names, by section, of items that exist in the file but failed conversion (their
    problem is already reported; references to them are not "unknown"). ``positions``: for
    ``tiers``/``clients``, the file index of each converted entry.
    """

    broken: Mapping[str, Collection[str]] = field(default_factory=dict)
    positions: Mapping[str, Sequence[int]] = field(default_factory=dict)


@dataclass
class ValidationResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(config: Config, hints: ValidationHints | None = None) -> ValidationResult:
    """Run every check on ``config``; never raises for config problems."""
    checker = _Validator(config, hints or ValidationHints())
    checker.run()
    return checker.result


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    if not listed:
        return "none defined"
    shown = ", ".join(listed[:12])
    return shown + (f", ... ({len(listed)} in all)" if len(listed) > 12 else "")


def url_problems(url: str) -> list[str]:
    """What is wrong with a backend ``base_url``. Never echoes the URL (it may hold credentials)."""
    if any(char.isspace() for char in url):
        return ["must not contain whitespace or line breaks"]
    if any(not char.isprintable() for char in url):
        return ["must not contain control characters"]
    if "\\" in url:
        # Parsers disagree on backslashes (WHATWG reads them as "/", urlsplit does not): a classic
        # way to make a URL mean one host to the validator and another to the client.
        return ["must not contain a backslash"]
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return ["is not a valid URL (check the host and port)"]
    problems: list[str] = []
    if parts.scheme.lower() not in ("http", "https"):
        problems.append("must start with http:// or https://")
    if "@" in parts.netloc:
        problems.append(
            "must not contain credentials (user:password@); put the key in api_key_env or api_key_secret"
        )
    if not parts.hostname:
        problems.append("has no host (expected e.g. http://127.0.0.1:11434)")
    elif not _HOST_OK.fullmatch(parts.hostname):
        problems.append(
            "has a host with characters other than letters, digits, '.', '-', '_' or an IPv6 address "
            "(write an internationalised name in its xn-- form; no %-escapes)"
        )
    if parts.query or "?" in url:
        problems.append("must not contain a query string (?...)")
    if parts.fragment or "#" in url:
        problems.append("must not contain a # fragment")
    return problems


class _Validator:
    def __init__(self, config: Config, hints: ValidationHints) -> None:
        self.config = config
        self.hints = hints
        self.result = ValidationResult()
        self.tier_names = {tier.name for tier in config.tiers}
        self.broken = {section: set(names) for section, names in hints.broken.items()}

    # -- helpers -----------------------------------------------------------------------------------

    def error(self, path: str, text: str) -> None:
        self.result.errors.append(f"{path}: {text}")

    def warning(self, path: str, text: str) -> None:
        self.result.warnings.append(f"{path}: {text}")

    def position(self, section: str, index: int) -> int:
        positions = self.hints.positions.get(section)
        return positions[index] if positions and index < len(positions) else index

    def is_broken(self, section: str, name: str) -> bool:
        return name in self.broken.get(section, ())

    def unknown(self, path: str, what: str, name: str, known: Collection[str]) -> None:
        close = suggest(name, known)
        hint = f"; did you mean '{close}'?" if close else ""
        self.error(path, f"unknown {what} '{name}' (known: {_known(known)}){hint}")

    def at_least(self, path: str, value: float | None, low: float, meaning: str = "") -> None:
        if value is not None and not value >= low:
            extra = f" ({meaning})" if meaning else ""
            self.error(path, f"must be at least {low:g}{extra}, got {value:g}")

    def between(self, path: str, value: float | None, low: float, high: float) -> None:
        if value is not None and not low <= value <= high:
            self.error(path, f"must be between {low:g} and {high:g}, got {value:g}")

    def check_tier_ref(self, path: str, name: str, what: str = "tier") -> None:
        if name not in self.tier_names and not self.is_broken("tiers", name):
            self.unknown(path, what, name, self.tier_names)

    # -- checks ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.check_gateway(self.config.gateway)
        for name, backend in self.config.backends.items():
            self.check_backend(key_path("backends", name), backend)
        self.check_tiers(self.config.tiers)
        self.check_aliases(self.config.aliases)
        for name, profile in self.config.profiles.items():
            self.check_profile(key_path("profiles", name), profile)
        self.check_cycles()
        self.check_clients()
        self.check_coverage()

    def check_gateway(self, gateway: GatewayConfig) -> None:
        self.between("gateway.client_port", gateway.client_port, 0, 65535)
        self.between("gateway.admin_port", gateway.admin_port, 0, 65535)
        for key in ("client_host", "admin_host"):
            if not getattr(gateway, key).strip():
                self.error(f"gateway.{key}", 'must not be empty (e.g. "127.0.0.1" or "0.0.0.0")')
        # lm-gateway-rs treats capacity 0 as "unbounded" and grows without limit.
        self.at_least("gateway.traffic_log_capacity", gateway.traffic_log_capacity, 1)
        if gateway.log_level is not None and gateway.log_level not in LOG_LEVELS:
            self.error(
                "gateway.log_level", f"must be one of {', '.join(LOG_LEVELS)}, got '{gateway.log_level}'"
            )
        self.at_least("gateway.rate_limit_rpm", gateway.rate_limit_rpm, 0, "0 disables the limit")
        self.between("gateway.max_retries", gateway.max_retries, 0, 10)
        self.at_least("gateway.retry_delay_ms", gateway.retry_delay_ms, 0)
        self.at_least("gateway.health_window", gateway.health_window, 0, "0 disables health tracking")
        threshold = gateway.health_error_threshold
        if threshold is not None and not 0 < threshold <= 1:
            self.error("gateway.health_error_threshold", f"must be above 0 and at most 1, got {threshold:g}")
        self.at_least("gateway.request_timeout_ms", gateway.request_timeout_ms, 0, "0 disables it")
        self.at_least("gateway.max_body_bytes", gateway.max_body_bytes, 1024)
        self.at_least("gateway.drain_timeout_ms", gateway.drain_timeout_ms, 1)
        self.at_least("gateway.circuit_min_failures", gateway.circuit_min_failures, 1)
        self.at_least("gateway.circuit_cooldown_ms", gateway.circuit_cooldown_ms, 1)
        self.check_gateway_limits(gateway)
        self.check_gateway_refs(gateway)
        self.check_cluster(gateway)

    def check_cluster(self, gateway: GatewayConfig) -> None:
        """The Redis settings: key names must stay printable and unambiguous."""
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", gateway.redis_prefix):
            self.error(
                "gateway.redis_prefix", "must be 1-64 letters, digits or _ . : - (it starts every Redis key)"
            )
        self.between("gateway.redis_timeout_ms", gateway.redis_timeout_ms, 10, 60_000)
        name = gateway.instance_name
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,64}", name):
            self.error("gateway.instance_name", "must be 1-64 letters, digits or _ . : @ -")

    def check_gateway_limits(self, gateway: GatewayConfig) -> None:
        """The request limits, the client port's timeouts, the config watcher and trusted proxies."""
        # orjson refuses nesting beyond 1024 by itself; deeper limits would only be misleading.
        self.between("gateway.max_json_depth", gateway.max_json_depth, 2, 1000)
        self.at_least("gateway.max_messages", gateway.max_messages, 1)
        self.at_least("gateway.max_header_bytes", gateway.max_header_bytes, 1024)
        self.at_least("gateway.header_timeout_ms", gateway.header_timeout_ms, 1)
        self.at_least("gateway.idle_timeout_ms", gateway.idle_timeout_ms, 1)
        self.at_least("gateway.watch_interval_ms", gateway.watch_interval_ms, 100)
        if gateway.otlp_endpoint is not None:
            for problem in url_problems(gateway.otlp_endpoint):
                self.error("gateway.otlp_endpoint", problem)
        for index, proxy in enumerate(gateway.trusted_proxies):
            try:
                ipaddress.ip_network(proxy.strip(), strict=False)
            except ValueError:
                self.error(
                    index_path("gateway.trusted_proxies", index),
                    f'\'{proxy[:60]}\' is not an IP address or network (e.g. "10.0.0.0/8" or "127.0.0.1")',
                )

    def check_gateway_refs(self, gateway: GatewayConfig) -> None:
        public = gateway.public_profile
        if (
            public is not None
            and public not in self.config.profiles
            and not self.is_broken("profiles", public)
        ):
            self.unknown("gateway.public_profile", "profile", public, self.config.profiles)
        if gateway.admin_token_env == "":
            self.warning(
                "gateway.admin_token_env", "is empty, so the admin API has no token; remove it or name a var"
            )
        if not gateway.admin_token_env and gateway.admin_host not in ("127.0.0.1", "::1", "localhost"):
            self.warning(
                "gateway.admin_host",
                f"the admin API listens on {gateway.admin_host} without a token; set admin_token_env "
                'or bind it to "127.0.0.1"',
            )

    def check_backend(self, path: str, backend: BackendConfig) -> None:
        if not backend.name:
            self.error(path, "a backend name must not be empty")
        for problem in url_problems(backend.base_url):
            self.error(f"{path}.base_url", problem)
        if backend.base_url.endswith("/v1"):
            self.warning(
                f"{path}.base_url",
                "ends with /v1, but the gateway appends the API path (/v1/...) itself; remove /v1",
            )
        self.at_least(f"{path}.timeout_ms", backend.timeout_ms, 1)
        self.at_least(f"{path}.connect_timeout_ms", backend.connect_timeout_ms, 1)
        self.at_least(f"{path}.max_connections", backend.max_connections, 1)
        self.check_backend_key(path, backend)
        self.at_least(f"{path}.max_concurrent", backend.max_concurrent, 1, "omit it for no gate")
        self.at_least(f"{path}.queue_limit", backend.queue_limit, 0)
        if backend.default_options and backend.provider is not Provider.OLLAMA:
            self.warning(f"{path}.default_options", "only used by ollama backends; ignored here")

    def check_backend_key(self, path: str, backend: BackendConfig) -> None:
        secret = backend.api_key_secret
        if secret is not None:
            where = f"{path}.api_key_secret"
            if secret.source not in ("env", "file"):
                self.error(f"{where}.source", f'must be "env" or "file", got "{secret.source}"')
            elif secret.source == "env" and not secret.var:
                self.error(f"{where}.var", 'is required when source = "env" (the env var holding the key)')
            elif secret.source == "file" and not secret.path:
                self.error(f"{where}.path", 'is required when source = "file" (the file holding the key)')
            if backend.api_key_env:
                self.warning(f"{path}.api_key_env", "ignored because api_key_secret is also set")
        elif backend.api_key_env == "":
            self.warning(f"{path}.api_key_env", "is empty, so no API key is sent; remove it or name a var")
        needs_key = backend.provider in (Provider.ANTHROPIC, Provider.OPENROUTER)
        if needs_key and backend.key_source is None:
            self.warning(
                path,
                f"provider {backend.provider.value} needs an API key; set api_key_env or api_key_secret",
            )

    def check_tiers(self, tiers: Sequence[TierConfig]) -> None:
        first_index: dict[str, int] = {}
        backends = self.config.backends
        for index, tier in enumerate(tiers):
            path = index_path("tiers", self.position("tiers", index))
            if not tier.name:
                self.error(f"{path}.name", "must not be empty")
            elif tier.name in first_index:
                other = index_path("tiers", self.position("tiers", first_index[tier.name]))
                self.error(f"{path}.name", f"duplicate tier name '{tier.name}' (also {other}); rename one")
            else:
                first_index[tier.name] = index
            if tier.backend not in backends and not self.is_broken("backends", tier.backend):
                self.unknown(f"{path}.backend", "backend", tier.backend, backends)
            if not tier.model:
                self.error(f"{path}.model", "must not be empty (the model name sent to the backend)")
            self.at_least(f"{path}.max_context_tokens", tier.max_context_tokens, 1)
            for key in ("input_cost_per_mtok", "output_cost_per_mtok"):
                cost = getattr(tier, key)
                if cost is not None and not (math.isfinite(cost) and cost >= 0):
                    self.error(f"{path}.{key}", f"must be a finite number >= 0, got {cost:g}")

    def check_aliases(self, aliases: Mapping[str, str]) -> None:
        for alias, target in aliases.items():
            path = key_path("aliases", alias)
            if target in self.tier_names or self.is_broken("tiers", target):
                if alias in self.tier_names and alias != target:
                    self.warning(
                        path, f"shadows the tier of the same name (requests for it go to '{target}')"
                    )
            elif target in aliases:
                self.error(
                    path,
                    f"'{target}' is an alias, not a tier; aliases cannot chain, point it at "
                    f"'{aliases[target]}' directly",
                )
            else:
                self.unknown(path, "tier", target, self.tier_names)

    def check_profile(self, path: str, profile: ProfileConfig) -> None:
        self.check_classifier(path, profile)
        if profile.max_auto_tier:
            self.check_tier_ref(f"{path}.max_auto_tier", profile.max_auto_tier)
        self.at_least(f"{path}.classifier_timeout_ms", profile.classifier_timeout_ms, 1)
        self.at_least(f"{path}.classifier_context", profile.classifier_context, 0, "0 skips classification")
        self.at_least(f"{path}.rate_limit_rpm", profile.rate_limit_rpm, 0, "0 disables the limit")
        self.check_rules(path, profile)
        for key in profile.class_prompts:
            if key in _PROFILE_FIELDS:
                # lm-gateway-rs shipped a profile with `system_prompt` written after the
                # [class_prompts] header, which TOML files under class_prompts: a silent no-op.
                self.warning(
                    key_path(f"{path}.class_prompts", key),
                    f"looks like the profile key '{key}' written after the [class_prompts] header, "
                    "where TOML puts it inside class_prompts; move it above that header",
                )
        for key in profile.thinking_messages:
            self.check_tier_ref(key_path(f"{path}.thinking_messages", key), key)
        self.check_routing_keys(path, profile)

    def check_routing_keys(self, path: str, profile: ProfileConfig) -> None:
        """The keys of the routing modes (failover, classifier fallback and cache, escalation caps,
        cost ceiling, pre-router, sufficiency), and the ones set where their mode never reads them."""
        if profile.classifier_fallback:
            self.check_tier_ref(f"{path}.classifier_fallback", profile.classifier_fallback)
        self.at_least(f"{path}.classifier_cache_size", profile.classifier_cache_size, 0, "0 disables it")
        self.at_least(f"{path}.max_escalations", profile.max_escalations, 0)
        ceiling = profile.cost_ceiling
        if ceiling is not None and not (math.isfinite(ceiling) and ceiling >= 0):
            self.error(f"{path}.cost_ceiling", f"must be a finite number of USD >= 0, got {ceiling:g}")
        for index, rule in enumerate(profile.pre_router):
            self.check_pre_rule(index_path(f"{path}.pre_router", index), rule)
        self.check_sufficiency(f"{path}.sufficiency", profile.sufficiency)
        self.check_mode_keys(path, profile)

    def check_pre_rule(self, path: str, rule: PreRouteRule) -> None:
        targets = self.tier_names | set(self.config.aliases)
        if not rule.route_to:
            self.error(f"{path}.route_to", "must not be empty (a tier or alias name)")
        elif rule.route_to not in targets and not self.is_broken("tiers", rule.route_to):
            self.unknown(f"{path}.route_to", "tier or alias", rule.route_to, targets)
        self.at_least(f"{path}.min_chars", rule.min_chars, 0)
        self.at_least(f"{path}.max_chars", rule.max_chars, 0)
        if rule.min_chars is not None and rule.max_chars is not None and rule.min_chars > rule.max_chars:
            self.error(
                path, f"min_chars ({rule.min_chars}) is above max_chars ({rule.max_chars}): never matches"
            )
        if rule.regex is not None:
            try:
                re.compile(rule.regex)
            except re.error as exc:
                self.error(f"{path}.regex", f"is not a valid regular expression: {exc}")
        conditions = (rule.min_chars, rule.max_chars, rule.has_code, rule.has_tools, rule.has_attachments)
        if all(value is None for value in conditions) and not rule.keywords and not rule.regex:
            self.warning(path, "has no condition, so it matches every request")

    def check_sufficiency(self, path: str, settings: SufficiencyConfig) -> None:
        for index, check in enumerate(settings.checks):
            if check not in SUFFICIENCY_CHECKS:
                self.error(
                    index_path(f"{path}.checks", index),
                    f"unknown check '{check}' (known: {', '.join(SUFFICIENCY_CHECKS)})",
                )
        if "judge" in settings.checks and not settings.judge:
            self.error(
                f"{path}.judge", 'is required when checks include "judge" (the tier that grades answers)'
            )
        elif settings.judge:
            self.check_tier_ref(f"{path}.judge", settings.judge)
            if "judge" not in settings.checks:
                self.warning(f"{path}.judge", 'is unused: add "judge" to checks to grade answers with it')
        self.at_least(f"{path}.min_chars", settings.min_chars, 0)
        self.between(f"{path}.logprob_quantile", settings.logprob_quantile, 0, 1)
        self.between(f"{path}.logprob_threshold", settings.logprob_threshold, 0, 1)
        self.between(f"{path}.judge_threshold", settings.judge_threshold, 0, 10)
        self.at_least(f"{path}.judge_timeout_ms", settings.judge_timeout_ms, 1)

    def check_mode_keys(self, path: str, profile: ProfileConfig) -> None:
        """Warn about routing keys the profile's mode never reads (likely a mode mix-up)."""
        mode = profile.mode
        unused: list[str] = []
        escalation_keys = profile.sufficiency != SufficiencyConfig() or profile.max_escalations is not None
        if escalation_keys and mode is not Mode.ESCALATE:
            unused.append("sufficiency/max_escalations (escalate mode only)")
        if profile.pre_router and mode not in (Mode.CLASSIFY, Mode.ESCALATE):
            unused.append("pre_router (classify and escalate modes only)")
        if profile.classifier_fallback and mode is not Mode.CLASSIFY:
            unused.append("classifier_fallback (classify mode only)")
        if profile.failover and mode in (Mode.ESCALATE, Mode.REPLY):
            unused.append("failover (escalate moves up the ladder on errors by itself)")
        for what in unused:
            self.warning(path, f"{what} is set but mode is '{mode.value}'; it has no effect")

    def check_classifier(self, path: str, profile: ProfileConfig) -> None:
        if profile.mode is Mode.REPLY:
            return
        if profile.classifier:
            self.check_tier_ref(f"{path}.classifier", profile.classifier)
        elif profile.mode is Mode.CLASSIFY and not profile.pre_router:
            self.error(
                f"{path}.classifier", "is required in classify mode (the tier that classifies requests)"
            )
        # lm-gateway-rs requires `classifier` in every non-reply mode. For dispatch and escalate it
        # only serves as the fallback tier for unknown model names, so we allow it to be empty:
        # such a profile answers an unknown model with a clear "unknown model" error instead.

    def check_rules(self, path: str, profile: ProfileConfig) -> None:
        targets = self.tier_names | set(self.config.aliases) | set(self.config.profiles)
        for section in ("tiers", "aliases", "profiles"):
            targets |= self.broken.get(section, set())
        for index, rule in enumerate(profile.rules):
            rule_path = index_path(f"{path}.rules", index)
            if not rule.route_to:
                self.error(f"{rule_path}.route_to", "must not be empty (a tier, alias or profile name)")
            elif rule.route_to not in targets:
                self.unknown(f"{rule_path}.route_to", "tier, alias or profile", rule.route_to, targets)
            if not rule.when:
                self.warning(f"{rule_path}.when", "is empty, so this rule matches every request")

    def check_cycles(self) -> None:
        for cycle in find_cascade_cycles(self.config.profiles):
            start = cycle[0]
            index = next(
                i for i, rule in enumerate(self.config.profiles[start].rules) if rule.route_to == cycle[1]
            )
            self.error(
                f"{key_path('profiles', start)}.rules[{index}].route_to",
                f"circular profile cascade: {' → '.join(cycle)}; route one of these rules to a tier",
            )

    def check_clients(self) -> None:
        profiles = self.config.profiles
        profile_by_env: dict[str, str] = {}
        for index, client in enumerate(self.config.clients):
            path = index_path("clients", self.position("clients", index))
            if not client.key_env:
                self.error(f"{path}.key_env", "must name the env var holding this client's key")
            if client.profile not in profiles and not self.is_broken("profiles", client.profile):
                self.unknown(f"{path}.profile", "profile", client.profile, profiles)
            previous = profile_by_env.setdefault(client.key_env, client.profile)
            if client.key_env and previous != client.profile:
                self.error(
                    f"{path}.key_env",
                    f"{client.key_env} is also bound to profile '{previous}'; one key can map to one "
                    "profile only",
                )
            self.check_client_routing(path, client)
        self.check_client_names()

    def check_client_routing(self, path: str, client: ClientConfig) -> None:
        profiles = self.config.profiles
        for index, name in enumerate(client.profiles):
            if name not in profiles and not self.is_broken("profiles", name):
                self.unknown(index_path(f"{path}.profiles", index), "profile", name, profiles)
        self.at_least(
            f"{path}.max_escalations_per_minute", client.max_escalations_per_minute, 0, "0 never steps up"
        )
        self.at_least(f"{path}.rate_limit_rpm", client.rate_limit_rpm, 0, "0 disables the limit")
        self.at_least(
            f"{path}.max_concurrent_streams", client.max_concurrent_streams, 1, "omit it for no limit"
        )
        spend = client.max_spend_usd_per_day
        if spend is not None:
            priced = any(t.input_cost_per_mtok or t.output_cost_per_mtok for t in self.config.tiers)
            if not spend > 0:
                self.error(
                    f"{path}.max_spend_usd_per_day", f"must be above 0 (omit it for no cap), got {spend:g}"
                )
            elif not priced:
                self.warning(
                    f"{path}.max_spend_usd_per_day",
                    "no tier declares input_cost_per_mtok or output_cost_per_mtok, so nothing is ever spent",
                )

    def check_client_names(self) -> None:
        """Extra profiles, escalation budgets and the per-client limits are looked up by client name:
        it must be unique among the clients that use them."""
        seen: dict[str, int] = {}
        for index, client in enumerate(self.config.clients):
            first = seen.setdefault(client.display_name, index)
            routed = (
                client.profiles
                or client.max_escalations_per_minute is not None
                or client.rate_limit_rpm
                or client.max_concurrent_streams is not None
                or client.max_spend_usd_per_day is not None
            )
            if first != index and routed:
                path = index_path("clients", self.position("clients", index))
                self.error(
                    f"{path}.name",
                    f"'{client.display_name}' also names clients[{self.position('clients', first)}]; give "
                    "each client with profiles, max_escalations_per_minute, rate_limit_rpm, "
                    "max_concurrent_streams or max_spend_usd_per_day its own name",
                )

    def check_coverage(self) -> None:
        profiles = self.config.profiles
        if not self.config.tiers and not self.broken.get("tiers"):
            routing = [name for name, profile in profiles.items() if profile.mode is not Mode.REPLY]
            if routing:
                self.error(
                    "tiers",
                    f"no [[tiers]] defined, but profiles {', '.join(routing)} route requests; add a "
                    '[[tiers]] entry (or make every profile mode = "reply")',
                )
            elif not profiles and not self.broken.get("profiles"):
                self.error("tiers", "no [[tiers]] and no [profiles.*] defined; add a [[tiers]] entry")
        if not profiles and not self.broken.get("profiles") and self.config.tiers:
            self.warning("profiles", "none defined; add [profiles.default] (requests use 'default')")


def find_cascade_cycles(profiles: Mapping[str, ProfileConfig]) -> list[list[str]]:
    """Every elementary cycle of profile → profile rule edges, each once, as ``[a, b, ..., a]``.

    A cycle is reported starting from its first profile in config order. Rules whose ``route_to``
    is not a profile are not edges (they end the cascade).
    """
    order = list(profiles)
    rank = {name: i for i, name in enumerate(order)}
    edges = {
        name: list(dict.fromkeys(rule.route_to for rule in profile.rules if rule.route_to in profiles))
        for name, profile in profiles.items()
    }
    cycles: list[list[str]] = []

    def walk(start: str, path: list[str]) -> None:
        for target in edges[path[-1]]:
            if len(cycles) >= _MAX_CYCLES_REPORTED:
                return
            if target == start:
                cycles.append([*path, start])
            elif rank[target] > rank[start] and target not in path:
                walk(start, [*path, target])

    for name in order:
        walk(name, [name])
    return cycles
