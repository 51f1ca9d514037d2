"""Circuit breakers shared by every instance.

A circuit that opens here is written as the key ``<prefix>:circuit:<backend>`` holding this
instance's name and expiring with the cool-down (Redis's clock, so the instances' clocks do not
matter); one that closes here (its probe got an answer) deletes the key if it is still this
instance's. Every :data:`SYNC_S` the keys of the running config's backends are read in one pipeline,
and each local circuit gets ``remote_until`` from the keys other instances wrote: routing then skips
that backend here too, without spending a single request on it. Each instance keeps its own window
and half-open probe; when a remote cool-down ends, traffic flows again.

While Redis is down, each instance's circuits work as they do alone; the marks already copied expire
with their cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lm_gateway.cluster.link import RedisLink
from lm_gateway.router.health import Circuit

SYNC_S = 0.5
# Delete the key only if this instance still owns it (another may have opened it since).
DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SharedCircuits:
    def __init__(self, link: RedisLink, instance: str, circuits: Callable[[], dict[str, Circuit]]) -> None:
        self.link = link
        self.instance = instance
        self._circuits = circuits
        self._delete = link.redis.register_script(DELETE_IF_OWNER)

    def _key(self, backend: str) -> str:
        return self.link.key("circuit", backend)

    def attach(self) -> dict[str, Circuit]:
        """Watch the running config's circuits (new backends appear after a reload)."""
        circuits = self._circuits()
        for name, circuit in circuits.items():
            if circuit.on_change is None:
                circuit.on_change = self._announcer(name)
        return circuits

    def _announcer(self, backend: str) -> Callable[[bool, float], None]:
        def announce(opened: bool, cooldown_s: float) -> None:
            # Redis down: the others will not see it; this instance's own circuit still works.
            self.link.later(self._announce(backend, opened, cooldown_s))

        return announce

    async def _announce(self, backend: str, opened: bool, cooldown_s: float) -> None:
        key = self._key(backend)

        async def command(redis: Any) -> Any:
            if opened:
                return await redis.set(key, self.instance, px=max(1, int(cooldown_s * 1000)))
            return await self._delete(keys=[key], args=[self.instance])

        await self.link.run(command)

    async def sync(self) -> None:
        """Copy the other instances' open circuits into the local ones."""
        circuits = self.attach()
        if not circuits:
            return
        names = list(circuits)

        async def command(redis: Any) -> Any:
            pipe = redis.pipeline(transaction=False)
            for name in names:
                pipe.get(self._key(name))
                pipe.pttl(self._key(name))
            return await pipe.execute()

        replies = await self.link.run(command)
        now = time.monotonic()
        mine = self.instance.encode()
        for index, name in enumerate(names):
            owner, ttl_ms = replies[2 * index], replies[2 * index + 1]
            circuit = circuits[name]
            if owner is not None and owner != mine and ttl_ms > 0:
                circuit.remote_until = now + ttl_ms / 1000
            elif circuit.remote_until:
                circuit.remote_until = 0.0
