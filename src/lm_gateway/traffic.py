"""The traffic log: one entry per request (failures included) in a bounded in-memory ring, plus
running totals. Nothing touches disk.

Recording is a deque append and a few integer increments, so it costs the hot path nothing worth
measuring; percentiles and per-tier breakdowns are computed only when the admin API asks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(slots=True)
class TrafficEntry:
    id: str
    started: float  # wall clock, seconds
    client: str
    profile: str | None
    requested_model: str | None
    endpoint: str
    stream: bool = False
    tier: str | None = None
    backend: str | None = None
    model: str | None = None
    mode: str | None = None
    status: int = 0
    error: str | None = None
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    overhead_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Routing detail (filled by the router's modes): the classifier's label, whether the request
    # stepped up the ladder, the cost of every upstream call it made, and the explainable route
    # (the content of X-LMG-Route: mode, label, each tier tried and why it was left).
    class_label: str | None = None
    escalated: bool = False
    cost_usd: float | None = None
    route: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return 200 <= self.status < 400 and self.error is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds")
        data["success"] = self.success
        extra = data.pop("extra")
        data.update(extra)
        return data


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    errors: int = 0
    streams: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    per_tier: dict[str, int] = field(default_factory=dict)
    per_status: dict[int, int] = field(default_factory=dict)


class TrafficLog:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("traffic log capacity must be at least 1")
        self._entries: deque[TrafficEntry] = deque(maxlen=capacity)
        self._totals = _Totals()
        self._listeners: list[Callable[[TrafficEntry], None]] = []
        self.started_at = time.time()

    @property
    def capacity(self) -> int:
        return self._entries.maxlen or 0

    def resize(self, capacity: int) -> None:
        if capacity != self.capacity:
            self._entries = deque(self._entries, maxlen=capacity)

    def subscribe(self, listener: Callable[[TrafficEntry], None]) -> Callable[[], None]:
        """Call ``listener`` for every new entry (the admin live feed); returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, entry: TrafficEntry) -> None:
        self._entries.append(entry)
        totals = self._totals
        totals.requests += 1
        if not entry.success:
            totals.errors += 1
        if entry.stream:
            totals.streams += 1
        if entry.prompt_tokens:
            totals.prompt_tokens += entry.prompt_tokens
        if entry.completion_tokens:
            totals.completion_tokens += entry.completion_tokens
        if entry.tier is not None:
            totals.per_tier[entry.tier] = totals.per_tier.get(entry.tier, 0) + 1
        totals.per_status[entry.status] = totals.per_status.get(entry.status, 0) + 1
        for listener in self._listeners:
            listener(entry)

    def recent(self, limit: int) -> list[TrafficEntry]:
        """Newest first."""
        if limit <= 0:
            return []
        entries = self._entries
        count = min(limit, len(entries))
        return [entries[-1 - i] for i in range(count)]

    def stats(self) -> dict[str, Any]:
        totals = self._totals
        window = list(self._entries)
        latencies = sorted(e.latency_ms for e in window)
        ttfbs = sorted(e.ttfb_ms for e in window if e.ttfb_ms is not None)
        return {
            "total_requests": totals.requests,
            "error_count": totals.errors,
            "error_rate": round(totals.errors / totals.requests, 4) if totals.requests else 0.0,
            "stream_count": totals.streams,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "tier_counts": dict(totals.per_tier),
            "status_counts": {str(k): v for k, v in sorted(totals.per_status.items())},
            "window": {
                "entries": len(window),
                "capacity": self.capacity,
                "errors": sum(1 for e in window if not e.success),
                "avg_latency_ms": round(sum(latencies) / len(latencies), 3) if latencies else 0.0,
                "latency_ms": _percentiles(latencies),
                "ttfb_ms": _percentiles(ttfbs),
            },
            "uptime_secs": int(time.time() - self.started_at),
        }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(values[-1], 3)}
