"""When to try a failed upstream call again, and how long to wait first.

Only failures another attempt may fix are retried (the backend error says so: connection failures,
timeouts, 429 and 5xx); lm-gateway-rs retried every error, 4xx included. Waits grow exponentially
from ``retry_delay_ms`` (capped at 2 s per wait) with jitter, so that clients that failed together do
not retry together. An upstream's ``Retry-After`` is honoured when it asks for longer, up to
:data:`MAX_RETRY_AFTER_S`; a longer request, or a wait that would overrun the request's deadline,
ends the retries on that tier (failover may then try the next one, or the client gets the error
with the upstream's ``Retry-After``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from lm_gateway.config.schema import GatewayConfig

DEFAULT_DELAY_MS = 200
MAX_WAIT_S = 2.0
MAX_RETRY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 0
    delay_s: float = DEFAULT_DELAY_MS / 1000

    @staticmethod
    def from_config(gateway: GatewayConfig) -> RetryPolicy:
        delay = DEFAULT_DELAY_MS if gateway.retry_delay_ms is None else gateway.retry_delay_ms
        return RetryPolicy(retries=gateway.max_retries or 0, delay_s=delay / 1000)

    def wait_before(self, attempt: int, retry_after: str | None, remaining_s: float | None) -> float | None:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` failed, counted from
        1), or None when there is no further attempt."""
        if attempt > self.retries:
            return None
        wait: float = min(self.delay_s * 2.0 ** (attempt - 1), MAX_WAIT_S) * random.uniform(0.5, 1.0)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            if asked > MAX_RETRY_AFTER_S:
                return None
            wait = max(wait, asked)
        if remaining_s is not None and wait >= remaining_s:
            return None
        return wait


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if not math.isnan(seconds) else None
