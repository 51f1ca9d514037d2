"""The cluster's recent traffic: every instance publishes its entries to one Redis stream, and every
instance reads the whole stream into :attr:`SharedTraffic.view`, the traffic log its admin side shows
as the cluster's (each entry tagged ``"instance": <name>``).

Publishing never touches the request path: an entry is encoded (a compact orjson array, the same row
the ``--workers`` channel uses) into a bounded queue, and a timer sends the queue every
:data:`FLUSH_S` in one pipeline (``XADD ... MAXLEN ~ <traffic_log_capacity>``, so the stream stays
as small as the ring). While Redis is down the queue keeps the newest ``traffic_log_capacity``
entries and sends them when Redis is back. The reader blocks on ``XREAD`` on its own connection.

The view is a plain :class:`~lm_gateway.traffic.TrafficLog`: its stats, ladder and charts are the
cluster's, computed from the entries that crossed Redis (each instance's own ``/metrics`` stays its
own, for Prometheus to sum).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any

import orjson

from lm_gateway.cluster.link import BLOCK_S, RECONNECT_S, RedisLink, Unavailable
from lm_gateway.traffic import TrafficEntry, TrafficLog, entry_from_row, entry_row

log = logging.getLogger("lm_gateway.cluster")

FLUSH_S = 0.1
READ_BATCH = 500
FIELD = b"e"


class SharedTraffic:
    def __init__(self, link: RedisLink, instance: str, capacity: int) -> None:
        self.link = link
        self.instance = instance
        self.capacity = capacity
        self.view = TrafficLog(capacity)
        self.dropped = 0  # entries that could not wait for Redis (the queue was full)
        self._key = link.key("traffic")
        self._queue: deque[bytes] = deque(maxlen=capacity)
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        link.on_up.append(self._send)

    # -- publishing --------------------------------------------------------------------------------

    def publish(self, entry: TrafficEntry) -> None:
        """A traffic log listener: queue the entry (hot path: encode and append, nothing else)."""
        queue = self._queue
        if len(queue) == self.capacity:
            self.dropped += 1
        queue.append(orjson.dumps((self.instance, entry_row(entry)), default=str))
        if self._timer is None and self._sending is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self._start_sending)

    def resize(self, capacity: int) -> None:
        """A reload's ``traffic_log_capacity``: the cluster's view, the queue kept while Redis is down
        and the stream's trim follow it, as the instance's own log does."""
        if capacity != self.capacity:
            self.capacity = capacity
            self.view.resize(capacity)
            self._queue = deque(self._queue, maxlen=capacity)

    def _start_sending(self) -> None:
        self._timer = None
        if self._sending is None and self.link.up:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                try:
                    await self.link.run(functools.partial(self._xadd, batch=batch))
                except Unavailable:
                    kept: deque[bytes] = deque(batch, maxlen=self.capacity)
                    kept.extend(self._queue)  # newer entries win when the queue overflows
                    self.dropped += len(batch) + len(self._queue) - len(kept)
                    self._queue = kept
                    return
        finally:
            self._sending = None

    async def _xadd(self, redis: Any, *, batch: list[bytes]) -> Any:
        pipe = redis.pipeline(transaction=False)
        for row in batch:
            pipe.xadd(self._key, {FIELD: row}, maxlen=self.capacity, approximate=True)
        return await pipe.execute()

    async def flush(self) -> None:
        """Send what is queued now (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is None and self.link.up:
            await self._send()

    # -- reading -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def stop(self) -> None:
        """Send what is queued and stop reading. The reader may sit in a blocking read that redis-py
        finishes only when its connection closes: it is not waited for here (closing the link ends
        it)."""
        await self.flush()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader}, timeout=0.1)

    async def _read_forever(self) -> None:
        last_id: bytes | None = None
        while True:
            await self.link.wait_up()
            try:
                if last_id is None:
                    last_id = await self._backfill()
                last_id = await self._read(last_id)
            except Unavailable:
                await asyncio.sleep(RECONNECT_S)

    async def _backfill(self) -> bytes:
        """The stream's newest ``capacity`` entries (oldest first); the id to read on from."""
        newest = await self.link.run(lambda redis: redis.xrevrange(self._key, count=self.capacity))
        for entry_id, fields in reversed(newest):
            self._ingest(entry_id, fields)
        return newest[0][0] if newest else b"0-0"

    async def _read(self, last_id: bytes) -> bytes:
        block_ms = int(BLOCK_S * 1000)
        reply = await self.link.run(
            lambda redis: redis.xread({self._key: last_id}, count=READ_BATCH, block=block_ms),
            client=self.link.blocking,
        )
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._ingest(entry_id, fields)
                last_id = entry_id
        return last_id

    def _ingest(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            instance, row = orjson.loads(fields[FIELD])
            entry = entry_from_row(row, "instance", instance)
        except (KeyError, ValueError, TypeError):
            log.warning("skipped an unreadable entry %s in the cluster traffic stream", entry_id[:40])
            return
        self.view.record(entry)

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "dropped": self.dropped}
