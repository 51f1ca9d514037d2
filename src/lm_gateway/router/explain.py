"""Explainable routing: the ``X-LMG-Route`` header, derived from the traffic entry.

The traffic entry's ``route`` holds one dict per step a mode took (``step``: what happened, ``tier``,
``outcome``, ``reason``, and for calls ``ms``, ``cost_usd``, ``status``, ``attempts``). The header is a
compact, bounded, ASCII rendering of the same facts, e.g.::

    escalate; try local:fast=insufficient (refusal); skip local:deep (circuit open); try cloud:std=ok
    classify label=code; classifier local:instant=code; rule cloud:std=rule 0; answer cloud:std

A plain dispatch that succeeded at once keeps no steps; its header is ``dispatch; answer <tier>``.
"""

from __future__ import annotations

from typing import Any

from lm_gateway.traffic import TrafficEntry

MAX_HEADER_CHARS = 512


def describe_step(step: dict[str, Any]) -> str:
    text = str(step.get("step", "?"))
    tier = step.get("tier")
    if tier:
        text += f" {tier}"
    outcome = step.get("outcome")
    if outcome:
        text += f"={outcome}"
    reason = step.get("reason")
    if reason:
        text += f" ({reason})"
    return text


def route_text(entry: TrafficEntry) -> str | None:
    """The full route as one line (unbounded, may hold any character); None before routing."""
    if entry.mode is None:
        return None
    head = entry.mode if entry.class_label is None else f"{entry.mode} label={entry.class_label}"
    steps = entry.route
    if not steps:
        return f"{head}; answer {entry.tier}" if entry.tier else head
    return "; ".join([head, *(describe_step(step) for step in steps)])


def route_header(entry: TrafficEntry) -> str | None:
    """The ``X-LMG-Route`` value: :func:`route_text` made header-safe (printable ASCII, no CR/LF)
    and cut to :data:`MAX_HEADER_CHARS`; None when the request was not routed."""
    text = route_text(entry)
    if text is None:
        return None
    if not (text.isascii() and text.isprintable()):
        text = "".join(char if " " <= char <= "~" else "?" for char in text)
    if len(text) > MAX_HEADER_CHARS:
        text = text[: MAX_HEADER_CHARS - 3] + "..."
    return text
