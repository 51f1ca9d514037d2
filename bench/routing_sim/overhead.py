"""Routing overhead per request, without upstream time: ``serve`` against a backend that answers at once
(a prebuilt completion), minus the same loop calling that backend directly.

What is timed per request: building the request body and its traffic entry, then either ``serve`` (the
measured side) or ``backend.chat`` (the baseline). The difference is what routing adds: profile and
model resolution, the mode's decisions, the circuit breaker, gate, retry loop, cost and route
bookkeeping, the request deadline. Each case runs ``rounds`` times; the median is reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from lm_gateway.backends import Backend, ChatStream, Completion, ProbeResult
from lm_gateway.config import BackendConfig, TierConfig, load_config_text
from lm_gateway.router import build_table, serve
from lm_gateway.router.tokens import estimate_request_tokens
from lm_gateway.traffic import TrafficEntry

ANSWER = "Here is a complete and useful answer, long enough for every heuristic check."
BUDGET_US = 100.0


class InstantBackend(Backend):
    def __init__(self, config: BackendConfig, label: str = "fast") -> None:
        super().__init__(config, None)
        message = {"role": "assistant", "content": ANSWER}
        payload: dict[str, Any] = {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message}],
        }
        payload["usage"] = {"prompt_tokens": 12, "completion_tokens": 14}
        self._answer = Completion(orjson.dumps(payload), 12, 14)
        label_payload = {
            **payload,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": label}}],
        }
        self._label = Completion(orjson.dumps(label_payload), 12, 1)

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        return self._label if tier.model == "classifier" else self._answer

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        raise NotImplementedError

    async def probe(self, timeout_s: float) -> ProbeResult:
        return ProbeResult(ok=True)


LADDER = """
[backends.b]
base_url = "http://b.invalid"
{backend_extra}

[[tiers]]
name = "local:small"
backend = "b"
model = "small"

[[tiers]]
name = "local:fast"
backend = "b"
model = "fast"
max_context_tokens = 32768
{tier_extra}

[[tiers]]
name = "cloud:large"
backend = "b"
model = "large"

[[tiers]]
name = "local:router"
backend = "b"
model = "classifier"

[aliases]
"hint:fast" = "local:fast"

[profiles.default]
{profile}
"""

PRE_ROUTER = """
[[profiles.default.pre_router]]
route_to = "cloud:large"
has_code = true

[[profiles.default.pre_router]]
route_to = "local:small"
max_chars = 60
keywords = ["hi", "hello", "thanks", "turn on", "turn off", "lock", "set", "what time"]
"""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    profile: str
    text: str = "Turn on the kitchen lights please"
    model: str = "hint:fast"
    backend_extra: str = ""
    tier_extra: str = ""
    gateway: str = ""


CASES = [
    Case("dispatch (defaults: health, deadline)", 'mode = "dispatch"'),
    Case(
        "dispatch + retries, failover, gate, priced tier",
        'mode = "dispatch"\nfailover = true\ncost_ceiling = 1.0',
        backend_extra="max_concurrent = 8",
        tier_extra="input_cost_per_mtok = 0.5\noutput_cost_per_mtok = 1.5",
        gateway="max_retries = 2",
    ),
    Case(
        "pre-router (classify, rule matches)", 'mode = "classify"\nclassifier = "local:router"' + PRE_ROUTER
    ),
    Case(
        "pre-router, no rule matches (no classifier)",
        'mode = "classify"\nclassifier_fallback = "local:fast"' + PRE_ROUTER,
        text="Explain how vaccines train the immune system in detail",
    ),
    Case(
        "classify, label from the cache",
        'mode = "classify"\nclassifier = "local:router"',
        text="Explain how vaccines train the immune system in detail",
    ),
    Case("escalate, first tier passes", 'mode = "escalate"\nmax_auto_tier = "cloud:large"'),
]


async def _loop(count: int, make_body: Callable[[], dict[str, Any]], call: Callable[..., Any]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        body = make_body()
        entry = TrafficEntry("id", 0.0, "bench", None, None, "/v1/chat/completions")
        await call(body, entry)
    return (time.perf_counter() - started) / count


async def measure(case: Case, count: int, rounds: int) -> dict[str, float]:
    gateway = f"[gateway]\n{case.gateway}\n"
    text = LADDER.format(backend_extra=case.backend_extra, tier_extra=case.tier_extra, profile=case.profile)
    config = load_config_text(gateway + text)
    table = build_table(config)
    backend = InstantBackend(config.backends["b"])
    backends: dict[str, Backend] = {"b": backend}
    tier = table.tiers["local:fast"]

    def make_body() -> dict[str, Any]:
        return {"model": case.model, "messages": [{"role": "user", "content": case.text}]}

    async def routed(body: dict[str, Any], entry: TrafficEntry) -> None:
        await serve(table, backends, body, bound_profile=None, expert=False, stream=False, trace=entry)

    async def direct(body: dict[str, Any], entry: TrafficEntry) -> None:
        await backend.chat(body, tier)

    await _loop(count // 10 or 1, make_body, routed)  # warm-up (fills the label cache, JIT-free caches)
    served = [await _loop(count, make_body, routed) for _ in range(rounds)]
    baseline = [await _loop(count, make_body, direct) for _ in range(rounds)]
    overhead = max(0.0, statistics.median(served) - statistics.median(baseline))
    return {
        "overhead_us": round(overhead * 1e6, 2),
        "baseline_us": round(statistics.median(baseline) * 1e6, 2),
    }


def measure_estimates(count: int) -> dict[str, float]:
    """Microseconds per token estimate of a 4 KB and a 32 KB conversation."""
    results = {}
    for size in (4_096, 32_768):
        turn = "The quick brown fox jumps over the lazy dog. " * 8
        messages = [
            {"role": "user" if i % 2 else "assistant", "content": turn} for i in range(size // len(turn))
        ]
        body = {"messages": messages}
        started = time.perf_counter()
        for _ in range(count):
            estimate_request_tokens(body)
        results[f"{size // 1024} KB"] = round((time.perf_counter() - started) / count * 1e6, 2)
    return results


async def run(count: int = 5000, rounds: int = 5) -> dict[str, Any]:
    cases = {case.name: await measure(case, count, rounds) for case in CASES}
    return {"cases": cases, "token_estimate_us": measure_estimates(count), "budget_us": BUDGET_US}


if __name__ == "__main__":  # pragma: no cover
    print(asyncio.run(run()))
