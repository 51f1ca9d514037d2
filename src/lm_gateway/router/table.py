"""Lookup tables derived once from a :class:`Config`, so routing a request is a few dict hits.

Everything a mode needs that depends only on the config is prepared here, per profile, in a
:class:`ProfilePlan`: the ceiling, compiled rules and pre-router, the classifier prompt, the judge.
The table also owns the routing state that must not outlive its config: the classifier caches and the
clients' escalation budgets (a reload starts them afresh). Backend health and gates live with the
backend adapters instead (``upstream.py``), which survive reloads that leave them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_gateway.config.schema import ClientConfig, Config, Mode, ProfileConfig, Provider, TierConfig
from lm_gateway.router.budget import Budgets
from lm_gateway.router.health import HealthPolicy
from lm_gateway.router.labels import ClassRule, LabelCache, compile_class_rules, default_prompt
from lm_gateway.router.prerouter import CompiledRule, compile_rules
from lm_gateway.router.retry import RetryPolicy
from lm_gateway.router.sufficiency import DEFAULT_REFUSALS, normalise

# Used when no `default` profile is configured: plain dispatch by model name, nothing injected.
IMPLICIT_DEFAULT = ProfileConfig(name="default")


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """A profile's routing settings, resolved against the ladder."""

    profile: ProfileConfig
    # Index of the highest tier automatic choices may reach (max_auto_tier, else the last tier).
    ceiling: int
    classifier: TierConfig | None
    fallback: TierConfig | None  # classifier_fallback
    judge: TierConfig | None
    prompt: str  # the classifier's system prompt
    rules: tuple[ClassRule, ...]
    pre_rules: tuple[CompiledRule, ...]
    known_labels: frozenset[str]
    refusals: tuple[str, ...]
    cache: LabelCache | None
    # A dispatch profile whose every call is already bounded by its backend's own timeout (no
    # retries, no failover, no gate): request_timeout_ms cannot be reached, so no deadline is set.
    self_bounded: bool = False

    @property
    def middle(self) -> int:
        """The middle candidate (the upper one for an even count), where unknown labels go."""
        return (self.ceiling + 1) // 2


@dataclass(frozen=True, slots=True)
class RoutingTable:
    config: Config
    tiers: dict[str, TierConfig]
    tier_index: dict[str, int]
    aliases: dict[str, TierConfig]
    profiles: dict[str, ProfileConfig]
    model_names: tuple[str, ...]
    warnings: tuple[str, ...]
    ladder: tuple[TierConfig, ...] = ()
    plans: dict[str, ProfilePlan] = field(default_factory=dict)
    # Lower-cased tier names and aliases, and tier-name suffixes (after the last ":"), to ladder index.
    label_index: dict[str, int] = field(default_factory=dict)
    suffix_index: dict[str, int] = field(default_factory=dict)
    # Configured clients by the name requests carry (``Identity.name``).
    clients: dict[str, ClientConfig] = field(default_factory=dict)
    think_backends: frozenset[str] = frozenset()
    health: HealthPolicy | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout_s: float | None = None
    budgets: Budgets = field(default_factory=lambda: Budgets({}))

    def profile(self, name: str | None) -> ProfileConfig:
        if name is not None:
            found = self.profiles.get(name)
            if found is not None:
                return found
        return self.profiles.get("default", IMPLICIT_DEFAULT)

    def plan(self, profile: ProfileConfig) -> ProfilePlan:
        found = self.plans.get(profile.name)
        if found is None or found.profile is not profile:
            found = _plan(self, profile)
        return found

    def resolve(self, name: str) -> TierConfig | None:
        """A tier by alias or name (aliases first, as everywhere)."""
        return self.aliases.get(name) or self.tiers.get(name)

    def understands_think(self, tier: TierConfig) -> bool:
        """Only Ollama takes a top-level ``think``; OpenAI-style APIs reject unknown fields."""
        return tier.backend in self.think_backends


def build_table(config: Config) -> RoutingTable:
    tiers: dict[str, TierConfig] = {}
    tier_index: dict[str, int] = {}
    suffix_index: dict[str, int] = {}
    for index, tier in enumerate(config.tiers):
        tiers.setdefault(tier.name, tier)
        tier_index.setdefault(tier.name, index)
        suffix_index.setdefault(tier.name.rsplit(":", 1)[-1].lower(), index)
    aliases = {alias: tiers[target] for alias, target in config.aliases.items() if target in tiers}
    label_index = {name.lower(): index for name, index in reversed(tier_index.items())}
    for alias, tier in aliases.items():
        label_index.setdefault(alias.lower(), tier_index[tier.name])
    names = (*tiers, *aliases, *config.profiles)
    gateway = config.gateway
    timeout_ms = gateway.request_timeout_ms
    clients = {client.display_name: client for client in config.clients}
    limits = {
        name: client.max_escalations_per_minute
        for name, client in clients.items()
        if client.max_escalations_per_minute is not None
    }
    table = RoutingTable(
        config=config,
        tiers=tiers,
        tier_index=tier_index,
        aliases=aliases,
        profiles=dict(config.profiles),
        model_names=names,
        warnings=(),
        ladder=tuple(config.tiers),
        label_index=label_index,
        suffix_index=suffix_index,
        clients=clients,
        think_backends=frozenset(
            name for name, backend in config.backends.items() if backend.provider is Provider.OLLAMA
        ),
        health=HealthPolicy.from_config(gateway),
        retry=RetryPolicy.from_config(gateway),
        request_timeout_s=timeout_ms / 1000 if timeout_ms else None,
        budgets=Budgets(limits),
    )
    table.plans.update({name: _plan(table, profile) for name, profile in config.profiles.items()})
    table.plans.setdefault(IMPLICIT_DEFAULT.name, _plan(table, IMPLICIT_DEFAULT))
    return table


def _plan(table: RoutingTable, profile: ProfileConfig) -> ProfilePlan:
    last = len(table.ladder) - 1
    ceiling = table.tier_index.get(profile.max_auto_tier, last) if profile.max_auto_tier else last
    candidates = table.ladder[: ceiling + 1]
    labels = list(dict.fromkeys(tier.name.rsplit(":", 1)[-1].lower() for tier in candidates))
    resolvable = {**table.tiers, **table.aliases}
    rules = compile_class_rules(profile.rules)
    known = {*table.label_index, *table.suffix_index, *(k.lower() for k in profile.class_prompts)}
    known.update(value for rule in rules for _, value in rule.when)
    wants_cache = profile.mode is Mode.CLASSIFY and profile.classifier_cache_size > 0
    refusals = profile.sufficiency.refusal_phrases
    single_call = profile.mode is Mode.DISPATCH and not profile.failover and table.retry.retries == 0
    return ProfilePlan(
        profile=profile,
        ceiling=ceiling,
        classifier=table.resolve(profile.classifier) if profile.classifier else None,
        fallback=table.resolve(profile.classifier_fallback) if profile.classifier_fallback else None,
        judge=table.resolve(profile.sufficiency.judge) if profile.sufficiency.judge else None,
        prompt=profile.classifier_prompt or default_prompt(labels),
        rules=rules,
        pre_rules=compile_rules(profile.pre_router, resolvable),
        known_labels=frozenset(known),
        refusals=tuple(normalise(p) for p in refusals) if refusals is not None else DEFAULT_REFUSALS,
        cache=LabelCache(profile.classifier_cache_size) if wants_cache else None,
        self_bounded=single_call and _backends_bounded(table),
    )


def _backends_bounded(table: RoutingTable) -> bool:
    """Whether every backend is ungated and times out (connect included) within request_timeout_ms."""
    limit = table.request_timeout_s
    if limit is None:
        return True
    return all(
        backend.max_concurrent is None and (backend.timeout_ms + backend.connect_timeout_ms) / 1000 <= limit
        for backend in table.config.backends.values()
    )
