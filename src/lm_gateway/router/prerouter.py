"""The zero-call pre-router: heuristics that pick a tier from the request itself, in microseconds.

Rules (``[[profiles.<name>.pre_router]]``) are compiled once per config: keywords become one regex
per rule, matched as whole words, case-insensitively. Request features (the last user message, its
length, whether it holds code, tools or attachments) are computed lazily, once, and only those a rule
asks about; a profile without rules costs nothing. The first rule whose conditions all hold wins.

Text conditions read the last user message, and at most :data:`MAX_SCAN_CHARS` of it, so a huge paste
cannot make routing slow (the context-window gate handles size).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lm_gateway.config.schema import PreRouteRule, TierConfig
from lm_gateway.protocols.openai import last_user_text

MAX_SCAN_CHARS = 32_000
_FENCE = "```"
# Lines that look like code in the common languages; two of them make a message "code".
_CODE_LINE = re.compile(
    r"^[ \t]*(?:def |class |import |from [\w.]+ import |#include|function |fn |func |package |"
    r"public |private |SELECT |INSERT |UPDATE |for ?\(|if ?\(|while ?\(|return |const |let |var )"
    r"|[;{}][ \t]*$",
    re.MULTILINE,
)


def looks_like_code(text: str) -> bool:
    if _FENCE in text:
        return True
    lines = _CODE_LINE.finditer(text, 0, MAX_SCAN_CHARS)
    return next(lines, None) is not None and next(lines, None) is not None


def has_attachments(messages: Any) -> bool:
    """Whether any user message carries a non-text part (image, audio, file)."""
    if not isinstance(messages, list):
        return False
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") not in (None, "text"):
                        return True
    return False


class Features:
    """What the rules ask about one request, each computed on first use."""

    __slots__ = ("_attachments", "_code", "_text", "body")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self._text: str | None = None
        self._code: bool | None = None
        self._attachments: bool | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = last_user_text(self.body.get("messages"))
        return self._text

    @property
    def has_code(self) -> bool:
        if self._code is None:
            self._code = looks_like_code(self.text)
        return self._code

    @property
    def has_tools(self) -> bool:
        tools = self.body.get("tools")
        return isinstance(tools, list) and bool(tools)

    @property
    def has_attachments(self) -> bool:
        if self._attachments is None:
            self._attachments = has_attachments(self.body.get("messages"))
        return self._attachments


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    tier: TierConfig
    rule: PreRouteRule
    keywords: re.Pattern[str] | None
    regex: re.Pattern[str] | None

    def matches(self, features: Features) -> bool:
        rule = self.rule
        if rule.has_tools is not None and features.has_tools != rule.has_tools:
            return False
        if rule.has_attachments is not None and features.has_attachments != rule.has_attachments:
            return False
        if rule.min_chars is not None and len(features.text) < rule.min_chars:
            return False
        if rule.max_chars is not None and len(features.text) > rule.max_chars:
            return False
        if rule.has_code is not None and features.has_code != rule.has_code:
            return False
        if self.keywords is not None and self.keywords.search(features.text, 0, MAX_SCAN_CHARS) is None:
            return False
        return self.regex is None or self.regex.search(features.text, 0, MAX_SCAN_CHARS) is not None


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any keyword as a whole word (``c++`` works too)."""
    words = [re.escape(word.strip()) for word in keywords if word.strip()]
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)


def compile_rules(rules: Sequence[PreRouteRule], resolve: dict[str, TierConfig]) -> tuple[CompiledRule, ...]:
    """Compile a profile's rules; rules whose target or regex is invalid are left out (validation
    has already reported them, so this only guards a config built without validation)."""
    compiled = []
    for index, rule in enumerate(rules):
        tier = resolve.get(rule.route_to)
        if tier is None:
            continue
        try:
            regex = re.compile(rule.regex) if rule.regex else None
        except re.error:
            continue
        compiled.append(CompiledRule(index, tier, rule, keyword_pattern(rule.keywords), regex))
    return tuple(compiled)


def pre_route(rules: Sequence[CompiledRule], body: dict[str, Any]) -> CompiledRule | None:
    """The first rule matching ``body``, or None."""
    if not rules:
        return None
    features = Features(body)
    for rule in rules:
        if rule.matches(features):
            return rule
    return None
