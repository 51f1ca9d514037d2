"""The registry of measurements ("scenarios") and of the mock upstream flavours they need.

Why a registry: later issues add legs (Anthropic⇄OpenAI translation streams, 512 slow concurrent
streams, workers 1 vs 2, a soak test, a routing simulator). Each is one ``register(Scenario(...))``
here: a plain closed-loop load needs only fields; anything else passes its own ``run`` coroutine.
The orchestrator runs every selected scenario against every selected target, in registry order,
all targets back to back for one scenario so that they share the machine's state of the moment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadSpec, chat_body, run_load


@dataclass(frozen=True, slots=True)
class Upstream:
    """A mock upstream flavour: one ``bench.mock_upstream`` process started with ``args``.

    A target is started once per flavour it is measured against (its config points at that mock),
    so pacing never depends on the target forwarding ``X-Mock-*`` headers.
    """

    name: str
    args: tuple[str, ...] = ()
    title: str = ""


UPSTREAMS: dict[str, Upstream] = {
    "fast": Upstream("fast", (), "zero-latency mock"),
    "paced": Upstream("paced", ("--chunk-delay-ms", "5"), "mock pacing stream chunks 5 ms apart"),
}


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """What a scenario's ``run`` gets: where to send, and the time budget of this run."""

    scenario: Scenario
    port: int
    model: str
    duration_s: float
    warmup_s: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measurement, run against each target.

    ``baseline``: the table also shows this target's figures minus direct-to-mock's (added latency).
    ``show``: which table rows it feeds: ``rps``, ``latency`` (p50/p99), ``ttfc`` (p50/p99).
    """

    name: str
    title: str
    concurrency: int
    stream: bool = False
    upstream: str = "fast"
    baseline: bool = False
    show: tuple[str, ...] = ("rps",)
    duration_scale: float = 1.0
    run: Callable[[ScenarioRun], Awaitable[dict[str, Any]]] | None = None

    async def measure(self, ctx: ScenarioRun) -> dict[str, Any]:
        if self.run is not None:
            return await self.run(ctx)
        return await run_load(
            LoadSpec(
                port=ctx.port,
                body=chat_body(ctx.model, stream=self.stream),
                concurrency=self.concurrency,
                duration_s=ctx.duration_s,
                warmup_s=ctx.warmup_s,
                stream=self.stream,
            )
        )


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.upstream not in UPSTREAMS:
        raise ValueError(f"scenario {scenario.name}: unknown upstream {scenario.upstream!r}")
    SCENARIOS[scenario.name] = scenario
    return scenario


register(Scenario("c1", "non-stream c=1", 1, baseline=True, show=("rps", "latency")))
register(Scenario("c16", "non-stream c=16", 16, show=("rps", "latency")))
register(Scenario("c64", "non-stream c=64", 64))
register(Scenario("stream16", "stream (20 chunks) c=16", 16, stream=True, show=("rps", "ttfc")))
# Paced: each stream lasts ~100 ms, so c=4 gives ~40 streams/s of samples while the target stays
# nearly idle; what is measured is how long the first event waits inside the target (buffering).
register(
    Scenario(
        "ttfc",
        "paced stream (20 x 5 ms) c=4",
        4,
        stream=True,
        upstream="paced",
        baseline=True,
        show=("ttfc",),
    )
)
