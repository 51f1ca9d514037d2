"""Rate limits, concurrent-stream limits and the client's address behind trusted proxies.

Three token-bucket limits guard the client port, each optional: per client IP
(``gateway.rate_limit_rpm``, checked before authentication so key guessing is limited too), per
client key (``[[clients]] rate_limit_rpm``) and per profile (``profiles.X.rate_limit_rpm``, one
bucket shared by everyone using it). The buckets follow lm-gateway-rs: capacity ``ceil(rpm / 2)``,
refilled at ``rpm / 60`` tokens per second, one token per request. A refused request gets 429 with
``Retry-After`` and the ``X-RateLimit-*`` headers (see :func:`refusal_headers`). ``/healthz`` and
``/status`` are never limited.

The buckets live behind :class:`BucketStore` so that a shared store (Redis, see ``lm_gateway.cluster``)
can replace the in-process :class:`MemoryBuckets` without touching the request path. The stores
outlive config reloads: a bucket whose limit did not change keeps its level, one whose limit changed
starts full.

A spend cap (``[[clients]] max_spend_usd_per_day``) refuses a key's requests once what it spent this
UTC day (the cost of every upstream call, from the tiers' prices) reaches the cap, until midnight UTC.
A request is checked before it is routed and charged when it ends, so the one that crosses the cap
completes. The day's totals live behind :class:`SpendStore` (shared through Redis the same way).

Cost: with no limit configured, a request pays a couple of attribute checks here and nothing else
(no allocation, no call). With limits, one ``OrderedDict`` lookup per bucket.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from lm_gateway.config.schema import Config, GatewayConfig
from lm_gateway.http.server import Request, Response, ServerLimits, error_response
from lm_gateway.traffic import TrafficEntry

# At most this many buckets per store (per scope): beyond it the least recently used one is dropped,
# so a flood of distinct client addresses cannot grow memory without bound. Dropping a bucket that
# was not full forgives that client its deficit; that is the price of the bound.
MAX_BUCKETS = 50_000
# Each new bucket first drops up to this many least recently used buckets that have refilled
# completely (an idle bucket holds no information: a new one would start full too).
EVICT_PER_INSERT = 4
# Addresses remembered as trusted or not (the set of proxy peers is small; the bound is a guard).
MAX_TRUST_CACHE = 4096

RATE_LIMITED = "rate_limit_exceeded"
TOO_MANY_STREAMS = "too_many_streams"
SPEND_LIMITED = "spend_limit_exceeded"
DAY_S = 86_400
RATE_LIMIT_TYPE = "rate_limit_error"


class BucketStore(Protocol):
    """Where token buckets live. One store per scope (ip, client, profile), keyed by a plain string."""

    async def take(self, key: str, rate: float, burst: float) -> float:
        """Take one token from ``key``'s bucket (``burst`` tokens, refilled at ``rate`` per second).

        0.0 when a token was taken; otherwise the seconds until one will be there (nothing taken).
        A bucket last used with another ``rate`` or ``burst`` starts again full.
        """
        ...


class MemoryBuckets:
    """The in-process :class:`BucketStore`: least recently used first, bounded, idle ones evicted."""

    __slots__ = ("_buckets", "_clock", "max_keys")

    def __init__(self, max_keys: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        # key -> [tokens, last update, rate, burst]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str, rate: float, burst: float) -> float:
        return self.take_now(key, rate, burst)

    def take_now(self, key: str, rate: float, burst: float) -> float:
        """:meth:`take`, synchronously (the in-process store never waits)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket[2] != rate or bucket[3] != burst:
            if bucket is None:
                self._make_room(now)
            bucket = self._buckets[key] = [burst, now, rate, burst]
        else:
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            self._buckets.move_to_end(key)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / rate

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        for _ in range(EVICT_PER_INSERT):
            if not buckets:
                return
            key, (tokens, last, rate, burst) = next(iter(buckets.items()))
            if tokens + (now - last) * rate < burst:
                break  # the least recently used bucket is still refilling: so are the others, mostly
            del buckets[key]
        while len(buckets) >= self.max_keys:
            buckets.popitem(last=False)


class SpendStore(Protocol):
    """Where each capped client's spend of the day lives, keyed by client name and UTC day."""

    async def spent(self, client: str, day: str) -> float:
        """USD ``client`` spent on ``day`` (``YYYY-MM-DD``, UTC)."""
        ...

    def add(self, client: str, day: str, usd: float) -> None:
        """Charge ``usd`` to ``client`` on ``day`` (never waits)."""
        ...


class MemorySpend:
    """The in-process :class:`SpendStore`: one running total per capped client, today's only."""

    __slots__ = ("_spent",)

    def __init__(self) -> None:
        self._spent: dict[str, tuple[str, float]] = {}

    async def spent(self, client: str, day: str) -> float:
        return self.spent_now(client, day)

    def spent_now(self, client: str, day: str) -> float:
        total = self._spent.get(client)
        return total[1] if total is not None and total[0] == day else 0.0

    def add(self, client: str, day: str, usd: float) -> None:
        self._spent[client] = (day, self.spent_now(client, day) + usd)


def utc_day(at: float) -> str:
    """The UTC day of wall-clock time ``at``, as spend totals key it."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Rate:
    """A requests-per-minute limit as a token bucket (lm-gateway-rs semantics)."""

    rpm: int
    per_second: float
    burst: float

    @classmethod
    def from_rpm(cls, rpm: int | None) -> Rate | None:
        if not rpm:
            return None
        return cls(rpm, rpm / 60.0, float(max(1, math.ceil(rpm / 2))))


def refusal_headers(rate: Rate, wait: float, scope: str) -> list[tuple[str, str]]:
    """The headers of a rate-limited answer.

    ``Retry-After``: whole seconds until a request may succeed (rounded up, at least 1);
    ``X-RateLimit-Limit``: the limit in requests per minute; ``X-RateLimit-Remaining``: requests left
    now (0); ``X-RateLimit-Reset``: whole seconds until the bucket is full again;
    ``X-RateLimit-Scope``: which limit refused (``ip``, ``client``, ``profile``).
    """
    full_in = wait + (rate.burst - 1.0) / rate.per_second
    return [
        ("retry-after", str(max(1, math.ceil(wait)))),
        ("x-ratelimit-limit", str(rate.rpm)),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", str(max(1, math.ceil(full_in)))),
        ("x-ratelimit-scope", scope),
    ]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused by a limit: what every protocol needs to shape its 429."""

    message: str
    code: str
    headers: list[tuple[str, str]]

    def response(self) -> Response:
        """In the OpenAI shape (the other protocols reshape it, keeping the headers)."""
        return error_response(429, self.message, type_=RATE_LIMIT_TYPE, code=self.code, headers=self.headers)


class StreamStore(Protocol):
    """Where the streams open per client key are counted (this process, or every instance)."""

    async def acquire(self, name: str, cap: int) -> Callable[[], None] | None:
        """Take a slot when fewer than ``cap`` are open; returns the function that gives it back
        (idempotent), or None when the client is at its limit."""
        ...


class StreamCounts:
    """Streamed answers open per client key, in this process. Outlives reloads, like the buckets:
    streams that are open when the config changes still count against the new limit."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def open(self, name: str) -> int:
        return self._open.get(name, 0)

    async def acquire(self, name: str, cap: int) -> Callable[[], None] | None:
        return self.acquire_now(name, cap)

    def acquire_now(self, name: str, cap: int) -> Callable[[], None] | None:
        """:meth:`acquire`, without waiting for anything."""
        return None if self._open.get(name, 0) >= cap else self.take(name)

    def take(self, name: str) -> Callable[[], None]:
        """Count a slot whatever the cap (a shared store has already checked it); returns the
        function that gives it back (idempotent)."""
        self._open[name] = self._open.get(name, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._open.get(name, 1) - 1
            if left > 0:
                self._open[name] = left
            else:
                self._open.pop(name, None)

        return release


class LimitStores:
    """The state of every limit, kept across reloads (one per client API)."""

    __slots__ = ("client", "ip", "profile", "spend", "streams")

    def __init__(self, max_keys: int = MAX_BUCKETS) -> None:
        self.ip: BucketStore = MemoryBuckets(max_keys)
        self.client: BucketStore = MemoryBuckets(max_keys)
        self.profile: BucketStore = MemoryBuckets(max_keys)
        self.spend: SpendStore = MemorySpend()
        self.streams: StreamStore = StreamCounts()


class TrustedProxies:
    """Finds a request's client address when it comes through reverse proxies.

    ``X-Forwarded-For`` is believed only when the connection comes from a trusted proxy, and then
    only as far as it was written by trusted proxies: the list is read from the right (the entry the
    nearest proxy added) and the first address that is not a trusted proxy is the client. Anything a
    client writes into the header itself sits to the left of that and is never reached.
    """

    __slots__ = ("_cache", "_networks")

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks = tuple(ipaddress.ip_network(net.strip(), strict=False) for net in networks)
        self._cache: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        known = self._cache.get(address)
        if known is None:
            known = self._check(address)
            if len(self._cache) >= MAX_TRUST_CACHE:
                self._cache.clear()
            self._cache[address] = known
        return known

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        if not forwarded_for or not self.trusts(peer):
            return peer
        nearest = peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                return nearest  # not an address: the proxy chain is not readable past here
            if not self.trusts(address):
                return address
            nearest = address
        return nearest


class Limits:
    """The limits of one config snapshot, over the :class:`LimitStores` that outlive it.

    ``ip``, ``clients``, ``profiles``, ``streams``, ``spend`` and ``trusted`` are None or empty when
    not configured, so the request path tests one attribute per kind of limit and does nothing else.
    """

    __slots__ = ("before_auth", "clients", "ip", "profiles", "spend", "stores", "streams", "trusted")

    def __init__(self, config: Config, stores: LimitStores) -> None:
        gateway = config.gateway
        self.stores = stores
        self.ip = Rate.from_rpm(gateway.rate_limit_rpm)
        self.clients: dict[str, Rate] = {}
        self.streams: dict[str, int] = {}
        self.spend: dict[str, float] = {}
        for client in config.clients:
            rate = Rate.from_rpm(client.rate_limit_rpm)
            if rate is not None:
                self.clients[client.display_name] = rate
            if client.max_concurrent_streams is not None:
                self.streams[client.display_name] = client.max_concurrent_streams
            if client.max_spend_usd_per_day is not None:
                self.spend[client.display_name] = client.max_spend_usd_per_day
        self.profiles: dict[str, Rate] = {}
        for name, profile in config.profiles.items():
            rate = Rate.from_rpm(profile.rate_limit_rpm)
            if rate is not None:
                self.profiles[name] = rate
        self.trusted = TrustedProxies(gateway.trusted_proxies) if gateway.trusted_proxies else None
        # Anything to do before authentication (one test on the request path when False).
        self.before_auth = self.trusted is not None or self.ip is not None

    def client_ip(self, request: Request) -> str:
        if self.trusted is None:
            return request.peer
        return self.trusted.client_ip(request.peer, request.headers.get("x-forwarded-for"))

    async def check_ip(self, address: str) -> Refusal | None:
        rate = self.ip
        if rate is None:
            return None
        key = address if ":" not in address else ipv6_prefix(address)
        wait = await self.stores.ip.take(key, rate.per_second, rate.burst)
        if not wait:
            return None
        return _rate_refusal(rate, wait, "ip", "too many requests from this address")

    async def check_client(self, name: str) -> Refusal | None:
        rate = self.clients.get(name)
        if rate is None:
            return None
        wait = await self.stores.client.take(name, rate.per_second, rate.burst)
        if not wait:
            return None
        return _rate_refusal(rate, wait, "client", "too many requests for this client key")

    async def check_profile(self, name: str) -> Refusal | None:
        rate = self.profiles.get(name)
        if rate is None:
            return None
        wait = await self.stores.profile.take(name, rate.per_second, rate.burst)
        if not wait:
            return None
        return _rate_refusal(rate, wait, "profile", f"too many requests for profile '{name}'")

    async def check_spend(self, name: str) -> Refusal | None:
        cap = self.spend.get(name)
        if cap is None:
            return None
        now = time.time()
        spent = await self.stores.spend.spent(name, utc_day(now))
        if spent < cap:
            return None
        until_midnight = max(1, math.ceil(DAY_S - now % DAY_S))
        message = (
            f"spend limit exceeded: this client key spent ${spent:.4f} today (UTC), its cap is ${cap:g} "
            f"per day; retry after {until_midnight}s (midnight UTC)"
        )
        headers = [("retry-after", str(until_midnight)), ("x-ratelimit-scope", "spend")]
        return Refusal(message, SPEND_LIMITED, headers)

    def record_spend(self, entry: TrafficEntry) -> None:
        """Charge a finished request's cost to its client's day (only capped clients are kept)."""
        cost = entry.cost_usd
        if cost and entry.client in self.spend:
            self.stores.spend.add(entry.client, utc_day(entry.started), cost)

    async def open_stream(self, name: str) -> Callable[[], None] | Refusal | None:
        """A stream slot for client ``name``: its release function, a :class:`Refusal` when the
        client already has its maximum open, or None when it has no stream limit."""
        cap = self.streams.get(name)
        if cap is None:
            return None
        release = await self.stores.streams.acquire(name, cap)
        if release is not None:
            return release
        message = f"this client key already has {cap} streamed answers open (its limit); retry when one ends"
        return Refusal(message, TOO_MANY_STREAMS, [("retry-after", "1"), ("x-ratelimit-scope", "streams")])


_PREFIXES: dict[str, str] = {}


def ipv6_prefix(address: str) -> str:
    """The /64 an IPv6 client is in: one host usually holds a whole /64, so a per-address bucket
    would let it take a fresh address for every request. IPv4-mapped addresses stay themselves."""
    prefix = _PREFIXES.get(address)
    if prefix is None:
        try:
            ip = ipaddress.IPv6Address(address)
        except ValueError:
            return address
        if ip.ipv4_mapped is not None:
            prefix = str(ip.ipv4_mapped)
        else:
            prefix = str(ipaddress.IPv6Network((ip, 64), strict=False))
        if len(_PREFIXES) >= MAX_TRUST_CACHE:
            _PREFIXES.clear()
        _PREFIXES[address] = prefix
    return prefix


def _rate_refusal(rate: Rate, wait: float, scope: str, what: str) -> Refusal:
    headers = refusal_headers(rate, wait, scope)
    message = f"rate limit exceeded: {what} (limit {rate.rpm} per minute); retry after {headers[0][1]}s"
    return Refusal(message, RATE_LIMITED, headers)


def server_limits(gateway: GatewayConfig) -> ServerLimits:
    """The client port's HTTP server limits from ``[gateway]``."""
    return ServerLimits(
        max_body_bytes=gateway.max_body_bytes,
        max_header_bytes=gateway.max_header_bytes,
        header_timeout=gateway.header_timeout_ms / 1000,
        idle_timeout=gateway.idle_timeout_ms / 1000,
    )
