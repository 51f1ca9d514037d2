"""The traffic log's counters, histograms and time window, without sockets: what ``/metrics``,
``/status`` and the dashboard are computed from."""

from __future__ import annotations

from typing import Any

import pytest

from lm_gateway.traffic import SLOT_S, WINDOW_SLOTS, Histogram, TrafficEntry, TrafficLog


def entry(status: int = 200, latency_ms: float = 10.0, **fields: Any) -> TrafficEntry:
    base: dict[str, Any] = {
        "id": "r",
        "started": 0.0,
        "client": "c",
        "profile": "default",
        "requested_model": "m",
        "endpoint": "/v1/chat/completions",
        "tier": "local:fast",
        "backend": "mock",
    }
    return TrafficEntry(**{**base, **fields}, status=status, latency_ms=latency_ms)


def test_histogram_quantiles_interpolate_within_buckets_and_never_exceed_the_max() -> None:
    histogram = Histogram()
    assert histogram.quantile(0.5) is None
    for ms in range(1, 101):  # 1..100 ms
        histogram.observe(float(ms))
    assert histogram.count == 100 and histogram.sum == 5050
    p50 = histogram.quantile(0.5)
    p95 = histogram.quantile(0.95)
    assert p50 is not None and 40 <= p50 <= 60
    assert p95 is not None and 90 <= p95 <= 100
    histogram.observe(500_000.0)  # beyond the last bound: the +Inf bucket
    assert histogram.counts[-1] == 1
    assert histogram.quantile(1.0) == 500_000.0


def test_counters_by_labels_escalations_and_classifier_calls() -> None:
    log = TrafficLog(10)
    classified = [
        {"step": "classifier", "tier": "local:fast", "outcome": "code", "ms": 3.0},
        {"step": "answer", "tier": "cloud:economy"},
    ]
    log.record(entry(route=classified, class_label="code", tier="cloud:economy", cost_usd=0.002))
    log.record(
        entry(route=[{"step": "classifier", "outcome": "code", "reason": "cached"}], class_label="code")
    )
    log.record(entry(route=[{"step": "classifier", "outcome": "error", "reason": "timeout"}]))
    log.record(entry(route=[{"step": "classifier", "outcome": "skipped", "reason": "no input"}]))
    log.record(entry(status=502, error="backend down", escalated=True, profile="strict"))
    log.record(entry(status=401, tier=None, backend=None, profile=None))

    assert log.requests == {
        ("cloud:economy", "mock", "default", 200): 1,
        ("local:fast", "mock", "default", 200): 3,
        ("local:fast", "mock", "strict", 502): 1,
        ("", "", "", 401): 1,
    }
    assert log.classifier_calls == {("default", "ok"): 1, ("default", "error"): 1}
    assert log.escalations == {"strict": 1}
    assert log.routes[("local:fast", "mock")].errors == 1
    assert log.routes[("cloud:economy", "mock")].cost_usd == pytest.approx(0.002)
    assert log.public_stats() == {
        "total": 6,
        "errors": 2,
        "error_rate": pytest.approx(2 / 6, abs=1e-4),
        "escalations": 1,
        "avg_latency_ms": 10.0,
    }
    stats = log.stats()
    assert stats["tier_counts"] == {"cloud:economy": 1, "local:fast": 4}
    assert stats["status_counts"] == {"200": 4, "401": 1, "502": 1}


def test_window_covers_recent_slices_and_series_fills_the_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr("lm_gateway.traffic.time.time", lambda: clock[0])
    log = TrafficLog(10)
    log.started_at = clock[0] - 3600
    log.record(entry(latency_ms=20))
    clock[0] += 10 * 60  # ten minutes later
    log.record(entry(latency_ms=40))
    log.record(entry(status=500, error="boom", latency_ms=60))

    routes, covered = log.window(300)
    [recent] = routes.values()
    assert (recent.requests, recent.errors) == (2, 1)  # the first request is older than 5 minutes
    assert 295 <= covered <= 300
    series = log.series()
    assert len(series) == WINDOW_SLOTS
    assert series[-1]["errors"] == 1 and series[-1]["p50_ms"] is not None
    assert sum(1 for point in series if point["rps"]) == 2
    assert series[-1]["t"] == int(clock[0] // SLOT_S) * SLOT_S

    clock[0] += WINDOW_SLOTS * SLOT_S  # everything has aged out
    assert all(point["rps"] == 0 for point in log.series())
    assert log.window(300)[0] == {}


def test_listeners_get_every_entry_and_can_unsubscribe() -> None:
    log = TrafficLog(10)
    seen: list[TrafficEntry] = []
    unsubscribe = log.subscribe(seen.append)
    first = entry()
    log.record(first)
    unsubscribe()
    log.record(entry())
    assert seen == [first]
