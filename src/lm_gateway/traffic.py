"""The traffic log: one entry per request (failures included) in a bounded in-memory ring, plus
running totals, Prometheus-style counters and histograms, and a time-sliced window for the
dashboard's ladder and charts. Nothing touches disk.

Recording is on every request's hot path, so it does O(1) work with no locks and no sorting: a deque
append, a few integer increments, a dict lookup per label set and a bisect into fixed histogram
buckets. Everything derived (percentiles, rates, per-tier breakdowns, exposition) is computed only
when someone asks: the admin API, the dashboard feed or a ``/metrics`` scrape.
"""

from __future__ import annotations

import dataclasses
import operator
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# Upper bounds (ms) of the latency histogram buckets, shared by the Prometheus histograms and the
# dashboard's percentiles: fine enough to interpolate a useful p50/p95, few enough to stay cheap.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 400, 600,
    1_000, 1_500, 2_500, 4_000, 6_000, 10_000, 15_000, 30_000, 60_000, 120_000,
)  # fmt: skip
SLOT_S = 5  # width of one window slice
WINDOW_SLOTS = 180  # 15 minutes of slices, for the charts

# (tier, backend) of a request; ("", "") for one refused before routing (auth, malformed, unknown model).
RouteKey = tuple[str, str]


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


# A TrafficEntry as a plain tuple in field order, and back: how entries cross a process boundary
# (a --workers worker to its supervisor, an instance to the cluster's Redis stream) as compact arrays.
ENTRY_FIELDS = tuple(spec.name for spec in dataclasses.fields(TrafficEntry))
entry_row: Callable[[TrafficEntry], tuple[Any, ...]] = operator.attrgetter(*ENTRY_FIELDS)


def entry_from_row(row: list[Any], tag: str, source: Any) -> TrafficEntry:
    """A row sent by :func:`entry_row`, its ``extra`` tagged with where it came from."""
    entry = TrafficEntry(*row)
    entry.extra[tag] = source
    return entry


class Histogram:
    """Counts per fixed bucket of :data:`LATENCY_BOUNDS_MS` (the last one is +Inf), with sum and max.

    Counts are per bucket, not cumulative, so that observing is one increment; exposition and
    quantiles accumulate them when asked.
    """

    __slots__ = ("count", "counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
        self.count += 1
        self.sum += ms
        if ms > self.max:
            self.max = ms

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for index, value in enumerate(other.counts):
            counts[index] += value
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile: linear within its bucket, never above the largest seen."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
                upper = LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else self.max
                estimate = lower + (upper - lower) * max(0.0, rank - seen) / count
                return round(min(estimate, self.max), 3)
            seen += count
        return round(self.max, 3)


class Aggregate:
    """What is known of a set of requests: counts, latency (and time-to-first-token for streams),
    tokens and cost. One per route for the lifetime counters, one per route per window slice."""

    __slots__ = ("completion_tokens", "cost_usd", "errors", "latency", "prompt_tokens", "requests", "ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Histogram()
        self.ttft: Histogram | None = None  # allocated by the first stream only
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0

    def add(self, entry: TrafficEntry, success: bool) -> None:
        self.requests += 1
        if not success:
            self.errors += 1
        self.latency.observe(entry.latency_ms)
        if entry.ttfb_ms is not None:
            if self.ttft is None:
                self.ttft = Histogram()
            self.ttft.observe(entry.ttfb_ms)
        if entry.prompt_tokens:
            self.prompt_tokens += entry.prompt_tokens
        if entry.completion_tokens:
            self.completion_tokens += entry.completion_tokens
        if entry.cost_usd:
            self.cost_usd += entry.cost_usd

    def merge(self, other: Aggregate) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)
        if other.ttft is not None:
            if self.ttft is None:
                self.ttft = Histogram()
            self.ttft.merge(other.ttft)
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd

    def summary(self, seconds: float) -> dict[str, Any]:
        """Rates and percentiles over ``seconds`` of wall time, as the dashboard shows them."""
        latency = self.latency
        return {
            "requests": self.requests,
            "rps": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "p50_ms": latency.quantile(0.5),
            "p95_ms": latency.quantile(0.95),
            "p99_ms": latency.quantile(0.99),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


def merged(aggregates: Iterable[Aggregate]) -> Aggregate:
    total = Aggregate()
    for aggregate in aggregates:
        total.merge(aggregate)
    return total


class _Slot:
    """One :data:`SLOT_S`-wide slice of time, with an aggregate per route seen in it."""

    __slots__ = ("index", "routes")

    def __init__(self, index: int) -> None:
        self.index = index  # int(wall time // SLOT_S)
        self.routes: dict[RouteKey, Aggregate] = {}


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    errors: int = 0
    streams: int = 0
    escalations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


# Labels of the request counter: tier, backend, profile, status ("" when unknown).
RequestKey = tuple[str, str, str, int]


class TrafficLog:
    """Every request's entry, and what is derived from them: the ring of recent entries (the admin
    traffic view), lifetime counters (``/metrics``, ``/status``), the 15-minute window of slices (the
    dashboard's ladder and charts), the live-feed listeners and the in-flight gauges."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("traffic log capacity must be at least 1")
        self._entries: deque[TrafficEntry] = deque(maxlen=capacity)
        self._totals = _Totals()
        self._listeners: list[Callable[[TrafficEntry], None]] = []
        self._slots: deque[_Slot] = deque(maxlen=WINDOW_SLOTS)
        self._slot = _Slot(-1)
        # Lifetime counters, read by /metrics.
        self.requests: dict[RequestKey, int] = {}
        self.routes: dict[RouteKey, Aggregate] = {}
        self.escalations: dict[str, int] = {}  # by profile
        self.classifier_calls: dict[tuple[str, str], int] = {}  # by profile and ok/error
        # Gauges kept by the client server's handler wrapper (see ``track_in_flight``).
        self.in_flight = 0
        self.open_streams = 0
        self.started_at = time.time()

    @property
    def capacity(self) -> int:
        return self._entries.maxlen or 0

    def resize(self, capacity: int) -> None:
        if capacity != self.capacity:
            self._entries = deque(self._entries, maxlen=capacity)

    def subscribe(self, listener: Callable[[TrafficEntry], None]) -> Callable[[], None]:
        """Call ``listener`` for every new entry (the admin live feed); returns an unsubscribe.

        Listeners run on the hot path: they must only queue the entry, never format or send it.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, entry: TrafficEntry) -> None:
        self._entries.append(entry)
        success = entry.success
        self._count_totals(entry, success)
        profile = entry.profile or ""
        route = (entry.tier or "", entry.backend or "")
        key = (route[0], route[1], profile, entry.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        lifetime = self.routes.get(route)
        if lifetime is None:
            lifetime = self.routes[route] = Aggregate()
        lifetime.add(entry, success)
        self._window_aggregate(route).add(entry, success)
        if entry.escalated:
            self.escalations[profile] = self.escalations.get(profile, 0) + 1
        if entry.route:
            self._count_classifier_calls(profile, entry.route)
        for listener in self._listeners:
            listener(entry)

    def _count_totals(self, entry: TrafficEntry, success: bool) -> None:
        totals = self._totals
        totals.requests += 1
        totals.latency_ms += entry.latency_ms
        if not success:
            totals.errors += 1
        if entry.stream:
            totals.streams += 1
        if entry.escalated:
            totals.escalations += 1
        if entry.prompt_tokens:
            totals.prompt_tokens += entry.prompt_tokens
        if entry.completion_tokens:
            totals.completion_tokens += entry.completion_tokens

    def _count_classifier_calls(self, profile: str, route: list[dict[str, Any]]) -> None:
        """Count the classifier's upstream calls in a route (a cached label or a classifier skipped
        for want of input is not a call), by whether they gave a label."""
        calls = self.classifier_calls
        for step in route:
            if step.get("step") == "classifier" and step.get("reason") != "cached":
                outcome = step.get("outcome")
                if outcome != "skipped":
                    key = (profile, "error" if outcome == "error" else "ok")
                    calls[key] = calls.get(key, 0) + 1

    def _window_aggregate(self, route: RouteKey) -> Aggregate:
        """The current slice's aggregate for ``route``; a new slice starts every :data:`SLOT_S`."""
        index = int(time.time() // SLOT_S)
        slot = self._slot
        if slot.index != index:
            slot = self._slot = _Slot(index)
            self._slots.append(slot)
        aggregate = slot.routes.get(route)
        if aggregate is None:
            aggregate = slot.routes[route] = Aggregate()
        return aggregate

    def recent(self, limit: int) -> list[TrafficEntry]:
        """Newest first."""
        if limit <= 0:
            return []
        entries = self._entries
        count = min(limit, len(entries))
        return [entries[-1 - i] for i in range(count)]

    # -- views, computed on demand ---------------------------------------------------------------

    def window(self, seconds: float, now: float | None = None) -> tuple[dict[RouteKey, Aggregate], float]:
        """Per-route aggregates of the last ``seconds`` (whole slices), and the wall time they cover
        (shorter right after start, so that rates are not diluted by time the gateway was not up)."""
        now = time.time() if now is None else now
        first = int(now // SLOT_S) - max(1, int(seconds // SLOT_S)) + 1
        routes: dict[RouteKey, Aggregate] = {}
        for slot in self._slots_since(first):
            for route, aggregate in slot.routes.items():
                target = routes.get(route)
                if target is None:
                    target = routes[route] = Aggregate()
                target.merge(aggregate)
        covered = now - max(first * SLOT_S, self.started_at)
        return routes, max(covered, 1e-3)

    def series(self, now: float | None = None) -> list[dict[str, Any]]:
        """One point per slice over the whole window (oldest first, empty slices included): request
        rate, errors and latency percentiles, for the dashboard's charts."""
        now = time.time() if now is None else now
        current = int(now // SLOT_S)
        by_index = {slot.index: slot for slot in self._slots_since(current - WINDOW_SLOTS + 1)}
        points = []
        for index in range(current - WINDOW_SLOTS + 1, current + 1):
            slot = by_index.get(index)
            total = merged(slot.routes.values()) if slot is not None else Aggregate()
            span = min(SLOT_S, now - index * SLOT_S) if index == current else SLOT_S
            latency = total.latency
            points.append(
                {
                    "t": index * SLOT_S,
                    "rps": round(total.requests / max(span, 1e-3), 3),
                    "errors": total.errors,
                    "p50_ms": latency.quantile(0.5),
                    "p95_ms": latency.quantile(0.95),
                    "p99_ms": latency.quantile(0.99),
                }
            )
        return points

    def _slots_since(self, first_index: int) -> Iterator[_Slot]:
        for slot in reversed(self._slots):
            if slot.index < first_index:
                return
            yield slot

    def public_stats(self) -> dict[str, Any]:
        """Counters with no tier, backend or model names (the public ``/status``)."""
        totals = self._totals
        return {
            "total": totals.requests,
            "errors": totals.errors,
            "error_rate": round(totals.errors / totals.requests, 4) if totals.requests else 0.0,
            "escalations": totals.escalations,
            "avg_latency_ms": round(totals.latency_ms / totals.requests, 3) if totals.requests else 0.0,
        }

    def stats(self) -> dict[str, Any]:
        totals = self._totals
        window = list(self._entries)
        latencies = sorted(e.latency_ms for e in window)
        ttfbs = sorted(e.ttfb_ms for e in window if e.ttfb_ms is not None)
        tier_counts: dict[str, int] = {}
        status_counts: dict[int, int] = {}
        for (tier, _, _, status), count in self.requests.items():
            if tier:
                tier_counts[tier] = tier_counts.get(tier, 0) + count
            status_counts[status] = status_counts.get(status, 0) + count
        return {
            "total_requests": totals.requests,
            "error_count": totals.errors,
            "error_rate": round(totals.errors / totals.requests, 4) if totals.requests else 0.0,
            "stream_count": totals.streams,
            "escalation_count": totals.escalations,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "tier_counts": tier_counts,
            "status_counts": {str(k): v for k, v in sorted(status_counts.items())},
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
