"""Lookup tables derived once from a :class:`Config`, so routing a request is a few dict hits."""

from __future__ import annotations

from dataclasses import dataclass

from lm_gateway.config.schema import Config, Mode, ProfileConfig, TierConfig

# Used when no `default` profile is configured: plain dispatch by model name, nothing injected.
IMPLICIT_DEFAULT = ProfileConfig(name="default")


@dataclass(frozen=True, slots=True)
class RoutingTable:
    config: Config
    tiers: dict[str, TierConfig]
    tier_index: dict[str, int]
    aliases: dict[str, TierConfig]
    profiles: dict[str, ProfileConfig]
    model_names: tuple[str, ...]
    warnings: tuple[str, ...]

    def profile(self, name: str | None) -> ProfileConfig:
        if name is not None:
            found = self.profiles.get(name)
            if found is not None:
                return found
        return self.profiles.get("default", IMPLICIT_DEFAULT)


def build_table(config: Config) -> RoutingTable:
    tiers: dict[str, TierConfig] = {}
    tier_index: dict[str, int] = {}
    for index, tier in enumerate(config.tiers):
        tiers.setdefault(tier.name, tier)
        tier_index.setdefault(tier.name, index)
    aliases = {alias: tiers[target] for alias, target in config.aliases.items() if target in tiers}
    warnings = tuple(
        f"profiles.{name}: mode '{profile.mode}' is not implemented yet; it routes as dispatch"
        for name, profile in config.profiles.items()
        if profile.mode in (Mode.ESCALATE, Mode.CLASSIFY)
    )
    names = (*tiers, *aliases, *config.profiles)
    return RoutingTable(config, tiers, tier_index, aliases, dict(config.profiles), names, warnings)
