"""The one exception a config load raises.

A load collects every problem it finds (parse errors, type errors, broken references, bad ranges) and
raises them together, so a user fixes a config in one round instead of one error per restart.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """A config that cannot be used. ``problems`` holds one human-readable line per problem.

    Each line starts with the key path it is about (``tiers[2].backend: ...``) and says what would
    fix it. No line ever contains a secret value.
    """

    def __init__(self, problems: Iterable[str], source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__(*self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"config {self.source}" if self.source else "config"
        header = f"{where}: {count} {noun}"
        return "\n".join([header, *(f"  - {problem}" for problem in self.problems)])

    def __repr__(self) -> str:
        return f"ConfigError({self.problems!r}, source={self.source!r})"
