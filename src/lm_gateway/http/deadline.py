"""Coarse request deadlines without a timer per request.

``asyncio.timeout()`` schedules (and cancels) a timer handle for every call, which showed up at ~5 %
of the gateway's CPU under load. Backend timeouts are seconds long, so a tick of 100 ms is precise
enough: a deadline is an entry in a set, and one background sweeper cancels the tasks whose deadline
passed. The task sees :class:`TimeoutError`, exactly as with ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

TICK_S = 0.1


class _Deadline:
    __slots__ = ("expired", "loop", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float, loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.when = when
        self.loop = loop
        self.expired = False

    def arm(self, seconds: float) -> None:
        """Expire ``seconds`` from now (an idle watch re-arms before each read)."""
        self.when = self.loop.time() + seconds

    def disarm(self) -> None:
        """Never expire until armed again: the task may now wait on something else (a slow client)."""
        self.when = math.inf


class Deadlines:
    """One per event loop; see :func:`deadline`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._active: set[_Deadline] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @contextmanager
    def within(self, seconds: float) -> Iterator[_Deadline]:
        task = asyncio.current_task(self.loop)
        if task is None:  # pragma: no cover - always called from a task
            raise RuntimeError("deadlines apply to tasks")
        entry = _Deadline(task, self.loop.time() + seconds, self.loop)
        self._active.add(entry)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(TICK_S, self._sweep)
        try:
            yield entry
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._active.discard(entry)

    def _sweep(self) -> None:
        now = self.loop.time()
        for entry in [e for e in self._active if e.when <= now and not e.expired]:
            entry.expired = True
            entry.task.cancel()
        self._sweeper = self.loop.call_later(TICK_S, self._sweep) if self._active else None


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()


class _LastManager(threading.local):
    ref: weakref.ref[Deadlines] | None = None


_last = _LastManager()
"""The manager of the loop this thread ran last (weakly: a closed loop is not kept alive by it).
CPython 3.11's ``asyncio.get_running_loop()`` makes a ``getpid`` system call each time; a thread runs
one loop at a time, so while that loop still runs it is the one asking, and the call is needed only
when the thread has started another loop."""


def deadline(seconds: float) -> AbstractContextManager[_Deadline]:
    """``with deadline(5): ...`` — like ``async with asyncio.timeout(5)`` at a 100 ms resolution.

    ``deadline(math.inf)`` gives an idle watch: ``arm(s)`` before each wait, ``disarm()`` after.
    """
    manager = _last.ref() if _last.ref is not None else None
    if manager is None or not manager.loop.is_running():
        loop = asyncio.get_running_loop()
        manager = _per_loop.get(loop)
        if manager is None:
            manager = _per_loop[loop] = Deadlines(loop)
        _last.ref = weakref.ref(manager)
    return manager.within(seconds)
