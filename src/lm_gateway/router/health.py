"""Per-backend health: a rolling window of call outcomes and a circuit breaker on top of it.

lm-gateway-rs judged health from the traffic log, which never held failures, so an unhealthy backend
was never detected. Here every upstream call reports its outcome to its backend's :class:`Circuit`.

States: **closed** (calls go through, outcomes fill the window); **open** once the window holds at
least ``min_failures`` failures and its error rate reaches the threshold: routing skips the backend
(and says so) until ``cooldown`` has passed; then **half-open**: exactly one call is let through as a
probe, and its outcome closes the circuit (with a fresh window) or opens it for another cool-down.

What counts as a failure: the backend could not give an answer (connection, timeout, 5xx, garbage,
a refused credential, a stream cut mid-way). A 4xx about the request itself, and 429 (alive, only
busy), are not failures: the backend answered.

Several instances (``gateway.redis_url``): when a circuit opens or closes here, ``on_change`` tells
the cluster, and a circuit another instance opened is copied in as ``remote_until`` (the monotonic
time its cool-down ends): routing skips the backend until then, as if it were open here. Each
instance still keeps its own window and its own half-open probe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lm_gateway.config.schema import GatewayConfig

DEFAULT_WINDOW = 10
DEFAULT_THRESHOLD = 0.7


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    window: int
    threshold: float
    min_failures: int
    cooldown_s: float

    @staticmethod
    def from_config(gateway: GatewayConfig) -> HealthPolicy | None:
        """None when health tracking is off (``health_window = 0``)."""
        window = DEFAULT_WINDOW if gateway.health_window is None else gateway.health_window
        if window <= 0:
            return None
        threshold = gateway.health_error_threshold
        return HealthPolicy(
            window=window,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
            min_failures=gateway.circuit_min_failures,
            cooldown_s=gateway.circuit_cooldown_ms / 1000,
        )


def is_failure(status: int, code: str) -> bool:
    """Whether an error the backend gave says it is unhealthy (see the module doc)."""
    return status >= 500 or code in ("backend_timeout", "backend_unreachable")


class Circuit:
    """One backend's breaker. Not thread-safe: everything runs on the event loop."""

    __slots__ = ("_failures", "_opened_at", "_outcomes", "_probing", "on_change", "remote_until")

    def __init__(self) -> None:
        self._outcomes: deque[bool] = deque()
        self._failures = 0
        self._opened_at: float | None = None  # None = closed
        self._probing = False
        # Cluster: a cool-down another instance started (monotonic end; 0.0 = none), and who to tell
        # when this circuit opens (True, with the cool-down in seconds) or closes (False, 0.0).
        self.remote_until = 0.0
        self.on_change: Callable[[bool, float], None] | None = None

    def is_open(self, policy: HealthPolicy, now: float | None = None) -> bool:
        """Whether routing should skip this backend now (open, or half-open with its probe out)."""
        if self._opened_at is None:
            return bool(self.remote_until) and self._remote_open()
        now = time.monotonic() if now is None else now
        return self._probing or now < self._opened_at + policy.cooldown_s

    def _remote_open(self) -> bool:
        if time.monotonic() < self.remote_until:
            return True
        self.remote_until = 0.0
        return False

    def retry_in(self, policy: HealthPolicy) -> float:
        """Seconds until the circuit lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return max(0.0, self.remote_until - time.monotonic()) if self.remote_until else 0.0
        return max(0.0, self._opened_at + policy.cooldown_s - time.monotonic())

    def admit(self, policy: HealthPolicy) -> str | None:
        """Take permission for one call: ``"closed"`` (go), ``"probe"`` (go, as the half-open probe)
        or None (refused: open, or another probe is out)."""
        if self._opened_at is None:
            return None if self.remote_until and self._remote_open() else "closed"
        if self.is_open(policy):
            return None
        self._probing = True
        return "probe"

    def record(self, ok: bool, policy: HealthPolicy, probe: bool = False) -> None:
        if self._opened_at is not None:
            if probe:
                self._probing = False
            if ok:
                self._close()  # any answer proves the backend is back
            elif probe:
                self._open(policy)
            return
        outcomes = self._outcomes
        outcomes.append(ok)
        if not ok:
            self._failures += 1
        while len(outcomes) > policy.window:
            if not outcomes.popleft():
                self._failures -= 1
        if self._failures >= policy.min_failures and self._failures >= policy.threshold * len(outcomes):
            self._open(policy)

    def _open(self, policy: HealthPolicy) -> None:
        self._opened_at = time.monotonic()
        if self.on_change is not None:
            self.on_change(True, policy.cooldown_s)

    def abandon(self) -> None:
        """The probe ended without an outcome (cancelled): let another probe through."""
        self._probing = False

    def _close(self) -> None:
        self._opened_at = None
        self._outcomes.clear()
        self._failures = 0
        self.remote_until = 0.0
        if self.on_change is not None:
            self.on_change(False, 0.0)

    def snapshot(self, policy: HealthPolicy) -> dict[str, object]:
        """The state as the admin API shows it."""
        if self._opened_at is None:
            state = "open" if self.remote_until and self._remote_open() else "closed"
        elif self._probing or not self.is_open(policy):
            state = "half-open"
        else:
            state = "open"
        return {
            "state": state,
            "window": len(self._outcomes),
            "failures": self._failures,
            "retry_in_s": round(self.retry_in(policy), 3),
            "opened_elsewhere": self._opened_at is None and state == "open",
        }
