"""``lm_gateway.http.deadline``: one deadline manager per event loop, found without asking asyncio for
the running loop on every call (a ``getpid`` system call each in CPython 3.11), and still the right
one when a thread runs one loop after another, or two threads run loops at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import uvloop

from lm_gateway.http import deadline as deadline_module
from lm_gateway.http.deadline import deadline


async def _times_out_after(seconds: float) -> float:
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadline(seconds):
        await asyncio.sleep(5)
    return time.monotonic() - started


def test_a_deadline_expires_in_each_loop_a_thread_runs_one_after_another() -> None:
    for run in (asyncio.run, uvloop.run, asyncio.run):
        assert run(_times_out_after(0.05)) < 1


def test_loops_running_at_once_in_two_threads_each_keep_their_deadlines() -> None:
    results: dict[str, Any] = {}

    def in_thread(name: str, seconds: float) -> None:
        try:
            results[name] = asyncio.run(_times_out_after(seconds))
        except BaseException as exc:  # reported below, not lost in the thread
            results[name] = exc

    threads = [threading.Thread(target=in_thread, args=(name, s)) for name, s in (("a", 0.05), ("b", 0.3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert isinstance(results["a"], float) and results["a"] < 0.3, results
    assert isinstance(results["b"], float) and 0.25 <= results["b"] < 1.5, results


def test_the_running_loop_is_looked_up_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal lookups
        lookups += 1
        return real()

    monkeypatch.setattr(deadline_module.asyncio, "get_running_loop", counting)

    async def many() -> None:
        for _ in range(20):
            with deadline(10):
                await asyncio.sleep(0)

    asyncio.run(many())
    assert lookups == 1
    asyncio.run(many())  # another loop: looked up again, once
    assert lookups == 2
