"""Several gateway instances behind a load balancer, sharing their state through Redis.

Configured by ``[gateway] redis_url`` (a secret: from an env var or a file). Without it this package
is never imported and every instance keeps its own state, exactly as before, with no Redis client
loaded. With it, what is shared:

* **rate-limit buckets** (per IP, per client key, per profile): one atomic Lua token bucket per key,
  so the requests all instances accept together stay within the limit (:mod:`.limits`);
* **spend caps** (``[[clients]] max_spend_usd_per_day``) and **escalation budgets**
  (``max_escalations_per_minute``): one total and one bucket per client (:mod:`.limits`);
* **circuit breakers**: a backend whose circuit opens on one instance is skipped by all of them for
  the cool-down (:mod:`.circuits`);
* **concurrent-stream caps** (``[[clients]] max_concurrent_streams``): a lease per open stream in its
  client's set, renewed while the stream is open, so a crashed instance's streams stop counting when
  their leases expire (:mod:`.limits`);
* **recent traffic**: every instance publishes its entries to one capped stream, and every instance's
  dashboard and ``/admin/traffic`` show the cluster's traffic, each entry naming its instance
  (``?scope=instance`` shows this instance's own) (:mod:`.traffic`).

What stays per instance: concurrency gates (``max_concurrent``: they queue requests for a backend in
priority order, which needs the queue in one place), classifier caches, ``/metrics`` and ``/status``.

**When Redis is unreachable** the gateway keeps serving: traffic is never refused because of Redis.
Each kind of state falls back to this instance's own (rate limits are enforced per instance, so the
cluster may accept up to N times a limit during the outage; a spend check counts the last shared
total plus what this instance charged since; circuits work per instance), traffic entries wait in a
bounded queue, and ``/admin/cluster`` says ``"redis": "down"``. Failing closed (refusing limited
clients) would turn a Redis outage into a gateway outage; failing fully open would lift the limits;
per-instance limits keep both the service and a bound. A command that does not answer within
``redis_timeout_ms`` counts as an outage; afterwards the request path does not try Redis until a
background ping succeeds (every second), then everything resumes and the queued charges and entries
are sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from lm_gateway.api.limits import LimitStores
from lm_gateway.cluster.circuits import SYNC_S, SharedCircuits
from lm_gateway.cluster.limits import SharedBudgets, SharedStreams, TokenBuckets, shared_limit_stores
from lm_gateway.cluster.link import RedisLink, Unavailable
from lm_gateway.cluster.traffic import SharedTraffic
from lm_gateway.config.schema import Config
from lm_gateway.router.budget import Budgets
from lm_gateway.router.health import Circuit
from lm_gateway.traffic import TrafficLog

# An instance is listed as live while it has written its heartbeat within this many seconds.
LIVE_S = 10.0


def instance_name(config: Config) -> str:
    """``gateway.instance_name``, else host name and pid (a ``--workers`` worker: its supervisor's)."""
    from lm_gateway.workers import SUPERVISOR_PID_ENV  # (set by the supervisor for its workers)

    pid = os.environ.get(SUPERVISOR_PID_ENV) or str(os.getpid())
    return config.gateway.instance_name or f"{socket.gethostname()}:{pid}"


class Cluster:
    """This instance's membership: the link, and whichever parts of the state it shares.

    The parts are attached by the process that owns them: the one serving the client port shares
    limits, budgets and circuits; the one holding the traffic log (with ``--workers``, the
    supervisor) shares the traffic.
    """

    def __init__(self, config: Config) -> None:
        assert config.redis_url is not None
        gateway = config.gateway
        self.instance = instance_name(config)
        self.link = RedisLink(
            config.redis_url.reveal(), gateway.redis_prefix, gateway.redis_timeout_ms / 1000
        )
        self.traffic: SharedTraffic | None = None
        self._buckets: TokenBuckets | None = None
        self._budgets: SharedBudgets | None = None
        self._streams: SharedStreams | None = None
        self._circuits: SharedCircuits | None = None
        self._sync: asyncio.Task[None] | None = None
        self._instances: dict[str, float] = {}

    async def start(self) -> None:
        await self.link.start()
        self._sync = asyncio.get_running_loop().create_task(self._sync_forever())

    async def stop(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
        if self.traffic is not None:
            await self.traffic.stop()
        await self.link.close()

    # -- what the client side shares ---------------------------------------------------------------

    def share_limits(self, stores: LimitStores) -> None:
        self._buckets, self._streams = shared_limit_stores(self.link, stores)
        self._budgets = SharedBudgets(self._buckets)

    def share_budgets(self, budgets: Budgets) -> None:
        """Called for every routing table (each reload builds new budgets)."""
        budgets.shared = self._budgets

    def share_circuits(self, circuits: Callable[[], dict[str, Circuit]]) -> None:
        self._circuits = SharedCircuits(self.link, self.instance, circuits)
        self._circuits.attach()

    # -- what the traffic log's owner shares -------------------------------------------------------

    def share_traffic(self, log: TrafficLog) -> TrafficLog:
        """Publish ``log``'s entries; returns the cluster's traffic log."""
        self.traffic = SharedTraffic(self.link, self.instance, log.capacity)
        log.subscribe(self.traffic.publish)
        self.traffic.start()
        return self.traffic.view

    # -- background sync ---------------------------------------------------------------------------

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                await self._heartbeat()
                if self._circuits is not None:
                    await self._circuits.sync()
                if self._streams is not None:
                    await self._streams.renew()
            except Unavailable:
                continue

    async def _heartbeat(self) -> None:
        key = self.link.key("instances")
        now = await self.link.run(_redis_time)

        async def command(redis: Any) -> Any:
            pipe = redis.pipeline(transaction=False)
            pipe.hset(key, self.instance, repr(now))
            pipe.hgetall(key)
            return await pipe.execute()

        seen = (await self.link.run(command))[1]
        live: dict[str, float] = {}
        stale: list[bytes] = []
        for name, stamp in seen.items():
            age = now - float(stamp)
            if age <= LIVE_S:
                live[name.decode(errors="replace")] = age
            elif age > 3600:
                stale.append(name)
        if stale:
            await self.link.run(lambda redis: redis.hdel(key, *stale))
        self._instances = live

    def view(self) -> dict[str, Any]:
        """What ``/admin/cluster`` and the dashboard show."""
        view: dict[str, Any] = {"enabled": True, "instance": self.instance, **self.link.view()}
        view["instances"] = sorted(self._instances) if self.link.up else [self.instance]
        if self.traffic is not None:
            view["traffic"] = self.traffic.stats()
        return view


async def _redis_time(redis: Any) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1_000_000
