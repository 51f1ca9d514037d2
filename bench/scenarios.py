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

from bench.loadgen import APIS, LoadSpec, run_load
from bench.slow_streams import SLOW_CHUNK_MS, run_slow_streams


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
    "slow": Upstream(
        "slow",
        ("--chunk-delay-ms", str(SLOW_CHUNK_MS), "--stamp"),
        f"mock pacing chunks {SLOW_CHUNK_MS} ms apart, each stamped with its send time",
    ),
}


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """What a scenario's ``run`` gets: where to send, and the time budget of this run."""

    scenario: Scenario
    port: int
    model: str
    duration_s: float
    warmup_s: float
    quick: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measurement, run against each target.

    ``api``: the client's API format (``bench.loadgen.APIS``): path, body and stream end marker.
    ``model``: the ``model`` sent, when not the target's default (it picks the gateway's tier, and so
    which backend, and so which upstream format, serves it).
    ``targets``: the targets it is measured on (None: all); the bare proxy only speaks OpenAI.
    ``baseline``: the table also shows this target's figures minus direct-to-mock's (added latency).
    ``floor``: direct is measured for it even when ``--only`` leaves direct out (derived figures
    need it: the per-chunk costs of the translation report).
    ``optional``: long; runs only when named in ``--only``.
    ``show``: which table rows it feeds: ``rps``, ``latency`` (p50/p99), ``ttfc`` (p50/p99),
    ``chunks`` (added per-chunk delay and stalls, from ``bench.slow_streams``).
    """

    name: str
    title: str
    concurrency: int
    stream: bool = False
    upstream: str = "fast"
    api: str = "openai"
    model: str | None = None
    targets: tuple[str, ...] | None = None
    baseline: bool = False
    floor: bool = False
    optional: bool = False
    show: tuple[str, ...] = ("rps",)
    duration_scale: float = 1.0
    run: Callable[[ScenarioRun], Awaitable[dict[str, Any]]] | None = None

    def runs_on(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    async def measure(self, ctx: ScenarioRun) -> dict[str, Any]:
        if self.run is not None:
            return await self.run(ctx)
        api = APIS[self.api]
        return await run_load(
            LoadSpec(
                port=ctx.port,
                path=api.path,
                body=api.body(self.model or ctx.model, stream=self.stream),
                concurrency=self.concurrency,
                duration_s=ctx.duration_s,
                warmup_s=ctx.warmup_s,
                stream=self.stream,
                stream_end=api.stream_end,
            )
        )


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.upstream not in UPSTREAMS:
        raise ValueError(f"scenario {scenario.name}: unknown upstream {scenario.upstream!r}")
    if scenario.api not in APIS:
        raise ValueError(f"scenario {scenario.name}: unknown API {scenario.api!r}")
    SCENARIOS[scenario.name] = scenario
    return scenario


register(Scenario("c1", "non-stream c=1", 1, baseline=True, show=("rps", "latency")))
register(Scenario("c16", "non-stream c=16", 16, show=("rps", "latency")))
register(Scenario("c64", "non-stream c=64", 64))
register(Scenario("stream16", "stream (20 chunks) c=16", 16, stream=True, floor=True, show=("rps", "ttfc")))
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

# Translation (issues #3 and #8): the same 20-chunk stream at c=16 on the four client/upstream pairs.
# The gateway's "hint:claude" tier is an Anthropic backend on the same mock (targets.GATEWAY_CONFIG);
# "hint:fast" the OpenAI one. OpenAI -> OpenAI is ``stream16`` above. report.TRANSLATIONS derives
# the per-chunk costs and the ratios to passthrough from these four.
register(
    Scenario(
        "stream16_o2a",
        "stream c=16 OpenAI->Anthropic",
        16,
        stream=True,
        model="hint:claude",
        targets=("gateway",),
        show=("rps", "ttfc"),
    )
)
register(
    Scenario(
        "stream16_a2o",
        "stream c=16 Anthropic->OpenAI",
        16,
        stream=True,
        api="anthropic",
        targets=("gateway",),
        show=("rps", "ttfc"),
    )
)
register(
    Scenario(
        "stream16_a2a",
        "stream c=16 Anthropic->Anthropic",
        16,
        stream=True,
        api="anthropic",
        model="hint:claude",
        targets=("direct", "gateway"),
        floor=True,
        show=("rps", "ttfc"),
    )
)
# Issue #8: 512 concurrent streams, one chunk every 50 ms, 200 chunks (10 s; --quick: 40 chunks).
# Optional: ~12 s per target and round, so it runs only when named: --only slow512.
register(
    Scenario(
        "slow512",
        "512 slow streams",
        512,
        stream=True,
        upstream="slow",
        optional=True,
        show=("chunks",),
        run=run_slow_streams,
    )
)
