"""Rate-limit buckets, escalation budgets and spend totals shared by every instance.

Token buckets (rate limits and escalation budgets) are one Redis hash each, updated by one Lua script
(:data:`TOKEN_BUCKET`): refill from Redis's own clock, take, store, all atomic. So the sum of what all
instances accept stays within the limit, whatever the instances' clocks say. The semantics are those
of the in-process buckets (``api/limits.py``): a bucket used with another rate or size starts full.

Spend totals are one float per client and UTC day (``INCRBYFLOAT``, kept two days). A charge is added
to this instance's pending total at once and sent in the background; what could not be sent (Redis
down) stays pending and is sent when Redis is back, so no spend is lost.

While Redis is down: buckets are this instance's own (so each instance enforces the whole limit by
itself: the cluster may accept up to N times the limit during the outage); the escalation budget is
the local one; a spend check uses the last total read from Redis plus everything charged here since.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from random import getrandbits
from typing import Any

from lm_gateway.api.limits import BucketStore, LimitStores, StreamCounts
from lm_gateway.cluster.link import RedisLink, Unavailable

# KEYS[1]: the bucket. ARGV: rate (tokens/s), burst (size), cost (tokens to take; 0 = read only).
# Returns {tokens left, seconds until `cost` tokens are there (0 when taken)}, as strings (Lua
# numbers would come back truncated to integers).
TOKEN_BUCKET = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'burst')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil or tonumber(b[3]) ~= rate or tonumber(b[4]) ~= burst then
  tokens, ts = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if cost > 0 then
  if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now),
  'rate', ARGV[1], 'burst', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate) * 1000) + 1000)
return {tostring(tokens), tostring(wait)}
"""
SPEND_TTL_S = 2 * 86_400


class TokenBuckets:
    """The Lua script, bound to a link."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._script = link.redis.register_script(TOKEN_BUCKET)

    async def take(self, key: str, rate: float, burst: float, cost: int = 1) -> tuple[float, float]:
        """(tokens left, seconds to wait); :class:`Unavailable` when Redis does not answer."""
        rate_arg, burst_arg = repr(float(rate)), repr(float(burst))

        async def command(_: Any) -> Any:
            return await self._script(keys=[key], args=[rate_arg, burst_arg, cost])

        tokens, wait = await self.link.run(command)
        return float(tokens), float(wait)


class SharedBuckets:
    """A :class:`~lm_gateway.api.limits.BucketStore` over Redis, ``local`` while Redis is down."""

    def __init__(self, buckets: TokenBuckets, scope: str, local: BucketStore) -> None:
        self._buckets = buckets
        self._prefix = buckets.link.key("rl", scope, "")
        self.local = local

    async def take(self, key: str, rate: float, burst: float) -> float:
        try:
            return (await self._buckets.take(self._prefix + key, rate, burst))[1]
        except Unavailable:
            return await self.local.take(key, rate, burst)


class SharedBudgets:
    """Escalation budgets (:class:`~lm_gateway.router.budget.SharedBudgets`) over Redis buckets of
    ``per_minute`` steps refilled at ``per_minute`` per minute."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self._buckets = buckets
        self._prefix = buckets.link.key("esc", "")

    async def level(self, client: str, per_minute: int) -> float | None:
        try:
            return (await self._buckets.take(self._prefix + client, per_minute / 60, per_minute, 0))[0]
        except Unavailable:
            return None

    def spend(self, client: str, per_minute: int) -> None:
        # Redis down: the local budget already took the step; the shared one refills meanwhile anyway.
        take = self._buckets.take(self._prefix + client, per_minute / 60, per_minute)
        self._buckets.link.later(take)


class SharedSpend:
    """A :class:`~lm_gateway.api.limits.SpendStore` over Redis (see the module doc for outages)."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._pending: dict[tuple[str, str], float] = {}  # charged here, not yet in Redis
        self._known: dict[str, tuple[str, float]] = {}  # last total read from Redis, by client
        self._flushing: asyncio.Task[None] | None = None
        link.on_up.append(self.flush)

    def _key(self, client: str, day: str) -> str:
        return self.link.key("spend", day, client)

    async def spent(self, client: str, day: str) -> float:
        pending = self._pending.get((client, day), 0.0)
        try:
            raw = await self.link.run(lambda redis: redis.get(self._key(client, day)))
        except Unavailable:
            known = self._known.get(client)
            return (known[1] if known is not None and known[0] == day else 0.0) + pending
        total = float(raw or 0.0)
        self._known[client] = (day, total)
        return total + pending

    def add(self, client: str, day: str, usd: float) -> None:
        key = (client, day)
        self._pending[key] = self._pending.get(key, 0.0) + usd
        if self._flushing is None and self.link.up:
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Send every pending charge (one pipeline); what fails stays pending."""
        try:
            while self._pending:
                batch = dict(self._pending)
                await self.link.run(functools.partial(self._incr, batch=batch))
                for key, usd in batch.items():
                    left = self._pending.get(key, 0.0) - usd
                    if left > 1e-12:
                        self._pending[key] = left
                    else:
                        self._pending.pop(key, None)
        except Unavailable:
            pass
        finally:
            self._flushing = None

    async def _incr(self, redis: Any, *, batch: dict[tuple[str, str], float]) -> Any:
        pipe = redis.pipeline(transaction=False)
        for (client, day), usd in batch.items():
            pipe.incrbyfloat(self._key(client, day), usd)
            pipe.expire(self._key(client, day), SPEND_TTL_S)
        return await pipe.execute()


# KEYS[1]: a client's open streams, a sorted set of leases scored by their expiry (ms, Redis's clock).
# ARGV: the cap, the new lease, the lease's length (ms). 1 when the lease was taken, 0 at the cap.
STREAM_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return 1
"""
# KEYS[1]: as above. ARGV: the lease length (ms), "XX" (renew only leases still there) or "" (put
# back those that expired, after an outage), then the leases this instance holds in the set.
STREAM_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local length = tonumber(ARGV[1])
for i = 3, #ARGV do
  if ARGV[2] == 'XX' then
    redis.call('ZADD', KEYS[1], 'XX', now + length, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], now + length, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 2 * length)
return 1
"""
LEASE_MS = 30_000
"""How long an open stream's lease lasts without renewal: a crashed instance's streams stop counting
against their clients' caps this long after its last renewal at the latest."""
RENEW_S = 10.0


class SharedStreams:
    """Concurrent-stream caps (a :class:`~lm_gateway.api.limits.StreamStore`) over Redis: each open
    stream holds a lease in its client's sorted set, renewed every :data:`RENEW_S` while it is open
    and removed when it ends. A slot is only ever given back by the instance holding it, so a crashed
    instance cannot give its slots back: its leases expire instead (:data:`LEASE_MS`).

    This instance's own counts (``local``) are kept either way: while Redis is down they are the
    limit (each instance then enforces the whole cap by itself, as with the rate limits), with this
    instance's open streams already counted. When Redis is back, the leases held here are put back."""

    def __init__(self, link: RedisLink, local: StreamCounts) -> None:
        self.link = link
        self.local = local
        self._lease = link.redis.register_script(STREAM_LEASE)
        self._renew = link.redis.register_script(STREAM_RENEW)
        self._prefix = link.key("streams", "")
        self._owner = f"{getrandbits(64):016x}"  # this process (workers share an instance name)
        self._ids = itertools.count()
        self._held: dict[str, set[str]] = {}  # client -> the leases this instance holds
        self._renewed = time.monotonic()
        link.on_up.append(self.restore)

    async def acquire(self, name: str, cap: int) -> Callable[[], None] | None:
        lease = f"{self._owner}:{next(self._ids)}"
        key = self._prefix + name
        try:
            taken = await self.link.run(lambda redis: self._lease(keys=[key], args=[cap, lease, LEASE_MS]))
        except Unavailable:
            return self.local.acquire_now(name, cap)
        if not taken:
            return None
        self._held.setdefault(name, set()).add(lease)
        release_local = self.local.take(name)

        def release() -> None:
            held = self._held.get(name)
            if held is None or lease not in held:
                return
            held.discard(lease)
            if not held:
                del self._held[name]
            release_local()
            self.link.later(self.link.run(lambda redis: redis.zrem(key, lease)))  # (or it expires)

        return release

    async def renew(self) -> None:
        """Every :data:`RENEW_S`: a new expiry for each lease held here that is still in Redis."""
        if time.monotonic() - self._renewed >= RENEW_S:
            await self._send_leases("XX")

    async def restore(self) -> None:
        """When Redis is back: the leases held here, put back (they may have expired meanwhile)."""
        await self._send_leases("")

    async def _send_leases(self, mode: str) -> None:
        self._renewed = time.monotonic()
        held = {self._prefix + name: sorted(leases) for name, leases in self._held.items()}
        if not held:
            return

        async def command(redis: Any) -> Any:
            pipe = redis.pipeline(transaction=False)
            for key, leases in held.items():
                await self._renew(keys=[key], args=[LEASE_MS, mode, *leases], client=pipe)
            return await pipe.execute()

        await self.link.run(command)


def shared_limit_stores(link: RedisLink, stores: LimitStores) -> tuple[TokenBuckets, SharedStreams]:
    """Put Redis behind ``stores``' buckets, spend and stream counts, the in-process stores kept as
    the fallback. Returns the buckets (the escalation budgets use them too) and the stream leases
    (renewed by the cluster's background sync)."""
    buckets = TokenBuckets(link)
    stores.ip = SharedBuckets(buckets, "ip", stores.ip)
    stores.client = SharedBuckets(buckets, "client", stores.client)
    stores.profile = SharedBuckets(buckets, "profile", stores.profile)
    stores.spend = SharedSpend(link)
    assert isinstance(stores.streams, StreamCounts)
    streams = stores.streams = SharedStreams(link, stores.streams)
    return buckets, streams
