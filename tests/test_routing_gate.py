"""The priority gate and the circuit breaker: units, then through the router.

The gate cases of lm-gateway-rs (priority.rs) are kept where they still mean something; there a
higher priority *bypassed* the in-flight set, which serialised each priority level per tier. Here a
gate has ``max_concurrent`` slots per backend and priority orders the queue, so "100 fires over an
in-flight 0" becomes "100 is served before the waiting 0s".
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from lm_gateway.backends import BackendError
from lm_gateway.router import backend_status
from lm_gateway.router.gate import GateFull, PriorityGate
from lm_gateway.router.health import Circuit, HealthPolicy

from .test_routing_kit import LADDER, Rig, Say, profile


async def test_an_empty_gate_fires_at_once_whatever_the_priority() -> None:
    gate = PriorityGate(1, 4)
    await asyncio.wait_for(gate.acquire(-999), 0.1)
    assert gate.in_flight == 1


async def test_waiters_are_served_highest_priority_first_fifo_within_a_level() -> None:
    gate = PriorityGate(1, 10)
    await gate.acquire(0)
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        await asyncio.sleep(0)
        gate.release()

    tasks = [
        asyncio.create_task(wait(n, p))
        for n, p in [("a0", 0), ("b-100", -100), ("c100", 100), ("d0", 0), ("e100", 100)]
    ]
    await asyncio.sleep(0.01)
    assert order == [] and gate.queued == 5
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["c100", "e100", "a0", "d0", "b-100"]
    assert gate.in_flight == 0 and gate.queued == 0


async def test_the_queue_is_bounded() -> None:
    gate = PriorityGate(1, 1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    with pytest.raises(GateFull):
        await gate.acquire()
    gate.release()
    await waiter
    gate.release()
    assert gate.in_flight == 0


async def test_a_cancelled_waiter_never_leaks_a_slot() -> None:
    # lm-gateway-rs leaked a slot when a waiter was cancelled right after being signalled (10.1 #9).
    gate = PriorityGate(1, 10)
    await gate.acquire()
    granted_then_cancelled = asyncio.create_task(gate.acquire())
    cancelled_while_waiting = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    cancelled_while_waiting.cancel()
    gate.release()  # hands the slot to the first waiter...
    granted_then_cancelled.cancel()  # ...which is cancelled before it runs
    for task in (granted_then_cancelled, cancelled_while_waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gate.in_flight == 0 and gate.queued == 0
    await asyncio.wait_for(gate.acquire(), 0.1)  # the slot is free


async def test_many_cancellations_keep_the_heap_bounded() -> None:
    gate = PriorityGate(1, 1000)
    await gate.acquire()
    for _ in range(10):
        tasks = [asyncio.create_task(gate.acquire()) for _ in range(50)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert gate.queued == 0 and len(gate._waiting) < 100


# -- circuit ---------------------------------------------------------------------------------------

POLICY = HealthPolicy(window=10, threshold=0.7, min_failures=3, cooldown_s=60)


def test_the_circuit_opens_on_the_error_rate_with_enough_failures() -> None:
    circuit = Circuit()
    for ok in (True, True, True, True, False, False, False):
        circuit.record(ok, POLICY)
    assert not circuit.is_open(POLICY)  # 3 of 7 failed: under 70 %
    for _ in range(5):
        circuit.record(False, POLICY)
    assert circuit.is_open(POLICY) and circuit.admit(POLICY) is None
    assert circuit.snapshot(POLICY)["state"] == "open"


def test_half_open_lets_one_probe_through() -> None:
    circuit = Circuit()
    policy = HealthPolicy(window=10, threshold=0.5, min_failures=1, cooldown_s=0)
    circuit.record(False, policy)
    assert circuit.admit(policy) == "probe"
    assert circuit.admit(policy) is None  # the probe is out
    assert circuit.snapshot(policy)["state"] == "half-open"
    circuit.record(False, policy, probe=True)  # failed probe: open again
    assert circuit.admit(policy) == "probe"
    circuit.abandon()  # cancelled probe: another may go
    assert circuit.admit(policy) == "probe"
    circuit.record(True, policy, probe=True)
    assert circuit.admit(policy) == "closed" and circuit.snapshot(policy)["failures"] == 0


# -- through the router ------------------------------------------------------------------------------


def gated(limit: int = 1, queue: int = 8, extra: str = "") -> str:
    toml = LADDER.replace(
        'base_url = "http://mock.invalid"',
        f'base_url = "http://mock.invalid"\nmax_concurrent = {limit}\nqueue_limit = {queue}',
    )
    return toml + profile("dispatch", extra)


async def test_the_gate_is_per_backend_and_orders_by_priority() -> None:
    rig = Rig(gated())
    rig.mock.by = lambda model, body: Say(
        delay=0.05, text=body["messages"][-1]["content"] + " done right now"
    )
    first = asyncio.create_task(rig.ask("first", model="local:instant"))
    await asyncio.sleep(0.01)
    low = asyncio.create_task(rig.ask("low", model="local:fast", priority=-5))
    high = asyncio.create_task(rig.ask("high", model="cloud:deep", priority=5))  # another tier, same GPU
    results = await asyncio.gather(first, low, high)
    assert [body["messages"][-1]["content"] for _, body in rig.mock.calls] == ["first", "high", "low"]
    assert rig.mock.max_active == 1
    assert results[1].entry.extra["gate_wait_ms"] > results[2].entry.extra["gate_wait_ms"] > 10


async def test_a_full_queue_is_a_429() -> None:
    rig = Rig(gated(queue=0))
    rig.mock.default = Say(delay=0.1)
    busy = asyncio.create_task(rig.ask())
    await asyncio.sleep(0.01)
    refused = await rig.ask()
    await busy
    assert isinstance(refused.error, BackendError) and refused.error.status == 429
    assert refused.error.code == "backend_queue_full" and refused.error.retry_after == "1"


async def test_a_full_queue_fails_over_when_allowed() -> None:
    toml = gated(queue=0, extra="failover = true").replace(
        '[[tiers]]\nname = "cloud:deep"\nbackend = "mock"',
        '[[tiers]]\nname = "cloud:deep"\nbackend = "cloud"',
    )
    rig = Rig(toml + '[backends.cloud]\nbase_url = "http://cloud.invalid"\n')
    rig.mock.default = Say(delay=0.1)
    busy = asyncio.create_task(rig.ask())
    await asyncio.sleep(0.01)
    result = await rig.ask()
    await busy
    assert result.tier == "cloud:deep"


async def test_a_stream_holds_its_slot_until_it_ends() -> None:
    rig = Rig(gated())
    result = await rig.ask(stream=True, drain=False)
    assert result.served is not None and result.served.stream is not None
    second = asyncio.create_task(rig.ask())
    await asyncio.sleep(0.02)
    assert not second.done()  # waiting for the stream's slot
    async for _ in result.served.stream:
        pass
    assert (await asyncio.wait_for(second, 1)).error is None


async def test_a_stream_closed_early_or_never_read_gives_its_slot_back() -> None:
    rig = Rig(gated())
    result = await rig.ask(stream=True, drain=False)
    assert result.served is not None and result.served.stream is not None
    chunks = aiter(result.served.stream)
    await anext(chunks)
    await chunks.aclose()  # the client went away
    assert rig.mock.streams[-1].closed
    unread = await rig.ask(stream=True, drain=False)
    del unread  # dropped without being iterated
    gc.collect()
    assert (await asyncio.wait_for(rig.ask(), 1)).error is None


async def test_the_request_deadline_covers_the_gate_wait() -> None:
    rig = Rig(gated(), gateway="request_timeout_ms = 150")
    rig.mock.default = Say(delay=1)
    busy = asyncio.create_task(rig.ask())
    await asyncio.sleep(0.01)
    waited = await rig.ask()
    assert isinstance(waited.error, BackendError) and waited.error.code == "gateway_timeout"
    busy_result = await busy
    assert busy_result.error is not None and busy_result.error.code == "gateway_timeout"
    status = backend_status(rig.table, dict(rig.backends))["mock"]
    assert status["gate"] == {"max_concurrent": 1, "in_flight": 0, "queued": 0}
    assert status["circuit"]["state"] == "closed"  # timeouts of our own making are no outcome
