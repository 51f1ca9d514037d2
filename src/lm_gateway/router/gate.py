"""The priority gate: bounded concurrency per backend, waiters served by ``X-LMG-Priority``.

Why per backend, not per tier as in lm-gateway-rs: tiers on one Ollama host share its GPU, so
a gate per tier let them pile onto it together. A backend with ``max_concurrent = N`` runs at most N
calls at once (classifier and judge calls and streams included: a stream holds its slot until it
ends); the others wait, highest priority first and in arrival order within a priority.

Two lm-gateway-rs defects are fixed by construction:

- a waiter cancelled after it was granted a slot (client gone, timeout) hands the slot on instead of
  leaking it forever: the grant and the cancellation are reconciled in :meth:`PriorityGate.acquire`;
- waiting is bounded in count (``queue_limit``, past which the caller gets :class:`GateFull`, a
  429) and in time (the request deadline cancels the wait, which is cancellation-safe).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class GateFull(Exception):
    """The backend's wait queue is full; the request is refused rather than queued without bound."""


class PriorityGate:
    __slots__ = ("_active", "_queued", "_seq", "_waiting", "limit", "queue_limit")

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self._active = 0
        self._queued = 0  # live waiters; the heap may also hold cancelled ones, dropped lazily
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return self._queued

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a slot; the caller must :meth:`release` it exactly once after a normal return."""
        if self._active < self.limit and not self._queued:
            self._active += 1
            return
        if self._queued >= self.queue_limit:
            raise GateFull
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._seq), future))
        self._queued += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted, then cancelled before use: pass the slot on
            else:
                self._queued -= 1
                self._compact()
            raise

    def release(self) -> None:
        self._active -= 1
        waiting = self._waiting
        while self._active < self.limit and waiting:
            _, _, future = heapq.heappop(waiting)
            if future.done():
                continue  # a cancelled waiter, already uncounted
            self._queued -= 1
            self._active += 1
            future.set_result(None)

    def _compact(self) -> None:
        """Drop cancelled waiters once they outnumber the live ones (keeps the heap bounded)."""
        if len(self._waiting) > 2 * self._queued + 16:
            self._waiting = [item for item in self._waiting if not item[2].done()]
            heapq.heapify(self._waiting)

    def snapshot(self) -> dict[str, int]:
        return {"max_concurrent": self.limit, "in_flight": self._active, "queued": self._queued}
