"""The connection to Redis, and whether Redis answers.

Every command goes through :meth:`RedisLink.run`. A connection error or a timeout
(``gateway.redis_timeout_ms``) marks Redis **down** and raises :class:`Unavailable`, so the caller
falls back to this instance's own state at once. While Redis is down nothing is sent from the request
path (``run`` raises without trying); a background task pings every :data:`RECONNECT_S` and, when
Redis answers again, marks it up and runs the ``on_up`` callbacks (which send what waited).

The URL holds a password more often than not: it is never logged, and errors are reported by kind
(``ConnectionRefusedError``, ``TimeoutError``), never by their message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger("lm_gateway.cluster")

RECONNECT_S = 1.0
# The longest a blocking read (the traffic stream) waits on the server before returning empty.
BLOCK_S = 1.0
# Connections in the pool for commands (one per concurrent command; the request path uses them).
MAX_CONNECTIONS = 256
CLOSE_TIMEOUT_S = 1.0

T = TypeVar("T")
# The client is typed loosely: redis-py's return types are unions of every reply shape.
Command = Callable[[Any], Awaitable[T]]


class Unavailable(Exception):
    """Redis did not answer (or is known to be down): use this instance's own state."""


def _describe(exc: BaseException) -> str:
    """What went wrong, without the message (which may name the URL)."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and not isinstance(exc, OSError):
        return f"{type(exc).__name__} ({type(cause).__name__})"
    return type(exc).__name__


class RedisLink:
    """One pool for commands, one client for blocking reads, and the up/down state."""

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),  # no hidden retries: a failure must fall back at once
            "health_check_interval": 0,
        }
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, max_connections=MAX_CONNECTIONS, **common
        )
        self.blocking: Redis = Redis.from_url(
            url, socket_timeout=timeout_s + BLOCK_S, max_connections=4, **common
        )
        self.prefix = prefix
        self.up = False
        self.down_since: float | None = time.time()
        self.failures = 0  # times Redis went down since start
        self.on_up: list[Callable[[], Awaitable[None]]] = []
        self._up_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._logged_errors: set[str] = set()
        self.closing = False  # closing connections on purpose: not an outage
        self._later: set[asyncio.Task[None]] = set()

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def start(self) -> None:
        """Connect (or note that Redis is down and keep trying in the background)."""
        await self._ping()
        if not self.up:
            log.warning(
                "redis unreachable at startup: serving with this instance's own limits, budgets and "
                "circuits until it answers"
            )
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self.redis, self.blocking):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), CLOSE_TIMEOUT_S)

    async def wait_up(self) -> None:
        await self._up_event.wait()

    async def run(self, command: Command[T], client: Redis | None = None) -> T:
        """Run ``command`` on Redis; :class:`Unavailable` when Redis is down or fails to answer."""
        if not self.up:
            raise Unavailable
        try:
            return await command(client or self.redis)
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.lost(exc)
            raise Unavailable from exc
        except RedisError as exc:  # Redis answered with an error: not down, but no answer either
            kind = type(exc).__name__
            if kind not in self._logged_errors:
                self._logged_errors.add(kind)
                log.error("redis refused a command (%s); this instance uses its own state for it", kind)
            raise Unavailable from exc

    def later(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work``, a write to Redis nobody waits for, in the background (kept referenced until
        it ends). If Redis does not answer, the write is dropped: each caller's state recovers
        otherwise (a lease expires, a bucket refills, a circuit stays this instance's own)."""
        task = asyncio.get_running_loop().create_task(_unless_down(work))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def lost(self, exc: BaseException) -> None:
        if not self.up or self.closing:
            return
        self.up = False
        self._up_event.clear()
        self.down_since = time.time()
        self.failures += 1
        log.warning(
            "redis unreachable (%s): rate limits, budgets and circuits fall back to this instance's "
            "own state; traffic waits to be published",
            _describe(exc),
        )

    async def _ping(self) -> bool:
        try:
            await self.redis.ping()
        except (TimeoutError, RedisError, OSError):
            return False
        if not self.up:
            was_down = self.down_since is not None and self.failures
            self.up = True
            self.down_since = None
            self._up_event.set()
            if was_down:
                log.warning("redis reachable again: shared state resumed")
            for callback in self.on_up:
                with contextlib.suppress(Unavailable):
                    await callback()
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_S)
            if not self.up:
                # Connections pooled before the outage are dead (a restarted Redis does not know
                # them): drop them all, or each would fail once and take Redis "down" again.
                for client in (self.redis, self.blocking):
                    with contextlib.suppress(Exception):
                        await client.connection_pool.disconnect()
                await self._ping()

    def view(self) -> dict[str, Any]:
        return {
            "redis": "up" if self.up else "down",
            "down_since": self.down_since,
            "outages": self.failures,
            "prefix": self.prefix,
        }


async def _unless_down(work: Coroutine[Any, Any, Any]) -> None:
    with contextlib.suppress(Unavailable):
        await work
