"""Rate limits (per client IP, per client key, per profile) and the concurrent-stream cap: token buckets
with lm-gateway-rs semantics, bounded memory, 429s in each protocol's error shape with Retry-After and
X-RateLimit-* headers, recorded in the traffic log; X-Forwarded-For believed only from trusted proxies;
/healthz and /status never limited."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lm_gateway.api.limits import (
    MemoryBuckets,
    Rate,
    StreamCounts,
    TrustedProxies,
    ipv6_prefix,
    refusal_headers,
)

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import NeverEndingStream
from .gateway import RunningGateway, openai_backend_config

CHAT = "/v1/chat/completions"
QUESTION = {"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]}
ANTHROPIC_QUESTION = {"model": "hint:fast", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}
OLLAMA_QUESTION = {"model": "hint:fast", "stream": False, "messages": [{"role": "user", "content": "q"}]}
KEY_A = "rate-key-a-1c2d"
KEY_B = "rate-key-b-3e4f"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take(store: MemoryBuckets, key: str, rate: Rate) -> float:
    return store.take_now(key, rate.per_second, rate.burst)


# -- the buckets themselves --------------------------------------------------------------------------


def test_rate_follows_lm_gateway_rs_semantics() -> None:
    rate = Rate.from_rpm(60)
    assert rate is not None and rate.burst == 30 and rate.per_second == 1.0
    one = Rate.from_rpm(1)
    assert one is not None and one.burst == 1  # ceil(1/2), never 0
    assert Rate.from_rpm(0) is None and Rate.from_rpm(None) is None


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    store = MemoryBuckets(clock=clock)
    rate = Rate.from_rpm(6)  # burst 3, one token every 10 s
    assert rate is not None
    assert [take(store, "k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert take(store, "k", rate) == pytest.approx(10.0)
    clock.now += 4
    assert take(store, "k", rate) == pytest.approx(6.0)  # refused requests take nothing
    clock.now += 6
    assert take(store, "k", rate) == 0.0
    clock.now += 1000  # refill is capped at the burst
    assert [take(store, "k", rate) for _ in range(4)][-1] > 0


def test_a_changed_limit_starts_a_full_bucket_an_unchanged_one_keeps_its_level() -> None:
    clock = Clock()
    store = MemoryBuckets(clock=clock)
    low, high = Rate.from_rpm(2), Rate.from_rpm(4)
    assert low is not None and high is not None
    assert take(store, "k", low) == 0.0
    assert take(store, "k", low) > 0  # same limit: still empty
    assert take(store, "k", high) == 0.0  # new limit: a fresh bucket


def test_buckets_are_bounded_and_idle_ones_are_evicted_first() -> None:
    clock = Clock()
    store = MemoryBuckets(max_keys=100, clock=clock)
    rate = Rate.from_rpm(60)
    assert rate is not None
    for i in range(1000):
        take(store, f"10.0.{i // 256}.{i % 256}", rate)
    assert len(store) <= 100
    clock.now += 3600  # every bucket refilled: new keys sweep the idle ones out
    for i in range(60):
        take(store, f"fresh-{i}", rate)
    assert len(store) <= 100
    assert take(store, "fresh-59", rate) == 0.0


def test_refusal_headers_round_up_whole_seconds() -> None:
    rate = Rate.from_rpm(6)  # burst 3, 10 s per token
    assert rate is not None
    headers = dict(refusal_headers(rate, 0.2, "client"))
    assert headers == {
        "retry-after": "1",
        "x-ratelimit-limit": "6",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "21",
        "x-ratelimit-scope": "client",
    }


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_ipv6_clients_are_limited_per_64(address: str, key: str) -> None:
    assert ipv6_prefix(address) == key


def test_stream_counts_release_once() -> None:
    counts = StreamCounts()
    first = counts.acquire_now("c", 2)
    second = counts.acquire_now("c", 2)
    assert first is not None and second is not None
    assert counts.acquire_now("c", 2) is None
    first()
    first()  # idempotent
    assert counts.open("c") == 1
    assert counts.acquire_now("c", 2) is not None


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.9", "203.0.113.5", "198.51.100.9"),  # peer is not a proxy: header ignored
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.7, 203.0.113.5", "203.0.113.5"),  # a client-written entry is ignored
        ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # through two trusted proxies
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: the farthest one
        ("127.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),  # unreadable past a hop: that hop
        ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # IPv4-mapped proxy address
        ("127.0.0.1", " 203.0.113.5 ,", "127.0.0.1"),  # a trailing empty hop is not an address
    ],
)
def test_client_ip_comes_from_trusted_proxies_only(peer: str, forwarded: str | None, client: str) -> None:
    assert TrustedProxies(("127.0.0.1", "10.0.0.0/8")).client_ip(peer, forwarded) == client


# -- over the wire -------------------------------------------------------------------------------------


def assert_limited(resp: httpx.Response, scope: str) -> None:
    assert resp.status_code == 429, resp.text
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-ratelimit-scope"] == scope
    assert resp.headers["x-ratelimit-remaining"] == "0"
    assert int(resp.headers["x-ratelimit-reset"]) >= int(resp.headers["retry-after"])
    assert "Traceback" not in resp.text


def test_per_ip_limit_in_every_protocol_shape_and_never_on_health(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="rate_limit_rpm = 4\n")  # burst 2
    assert httpx.post(gw.url + CHAT, json=QUESTION).status_code == 200
    assert httpx.get(gw.url + "/v1/models").status_code == 200
    refused = httpx.post(gw.url + CHAT, json=QUESTION)
    assert_limited(refused, "ip")
    assert refused.headers["x-ratelimit-limit"] == "4"
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    anthropic = httpx.post(gw.url + "/v1/messages", json=ANTHROPIC_QUESTION)
    assert_limited(anthropic, "ip")
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "rate_limit_error"
    ollama = httpx.post(gw.url + "/api/chat", json=OLLAMA_QUESTION)
    assert_limited(ollama, "ip")
    assert set(ollama.json()) == {"error"}
    for _ in range(10):
        assert httpx.get(gw.url + "/healthz").status_code == 200
        assert httpx.get(gw.url + "/status").status_code == 200
    assert len(fake.requests_to(CHAT)) == 1
    entries = gw.traffic()
    assert [e["status"] for e in entries[:3]] == [429, 429, 429]
    assert entries[0]["client"] == "127.0.0.1" and "rate limit" in entries[0]["error"]


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    trusted = start_gateway(
        openai_backend_config(fake.url),
        gateway_extra='rate_limit_rpm = 2\ntrusted_proxies = ["127.0.0.1"]\n',  # burst 1
    )

    def via(gw: RunningGateway, forwarded: str) -> int:
        return httpx.post(gw.url + CHAT, json=QUESTION, headers={"X-Forwarded-For": forwarded}).status_code

    assert via(trusted, "203.0.113.5") == 200
    assert via(trusted, "203.0.113.6") == 200  # another client behind the same proxy
    assert via(trusted, "203.0.113.99, 203.0.113.5") == 429  # a forged left-hand entry changes nothing
    assert trusted.traffic()[0]["client"] == "203.0.113.5"

    untrusted = start_gateway(openai_backend_config(fake.url), gateway_extra="rate_limit_rpm = 2\n")
    assert via(untrusted, "203.0.113.5") == 200
    assert via(untrusted, "203.0.113.6") == 429  # the header is not believed: one address, one bucket


def test_repeated_x_forwarded_for_lines_are_one_list(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(
        openai_backend_config(fake.url), gateway_extra='rate_limit_rpm = 2\ntrusted_proxies = ["127.0.0.1"]\n'
    )
    headers = [("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "203.0.113.2")]
    assert httpx.post(gw.url + CHAT, json=QUESTION, headers=headers).status_code == 200
    assert gw.traffic()[0]["client"] == "203.0.113.2"  # the last line is the nearest proxy's


CLIENTS = """
[profiles.shared]
mode = "dispatch"
classifier = "local:fast"
rate_limit_rpm = 6

[[clients]]
name = "limited"
key_env = "KEY_A"
profile = "default"
rate_limit_rpm = 2

[[clients]]
name = "other"
key_env = "KEY_B"
profile = "default"
profiles = ["shared"]
"""


@pytest.fixture
def keyed(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    return start_gateway(openai_backend_config(fake.url) + CLIENTS, env={"KEY_A": KEY_A, "KEY_B": KEY_B})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_per_client_key_limit_spares_other_keys(keyed: RunningGateway) -> None:
    assert httpx.post(keyed.url + CHAT, json=QUESTION, headers=bearer(KEY_A)).status_code == 200
    refused = httpx.post(keyed.url + CHAT, json=QUESTION, headers=bearer(KEY_A))
    assert_limited(refused, "client")
    assert KEY_A not in refused.text
    assert httpx.get(keyed.url + "/v1/models", headers=bearer(KEY_A)).status_code == 429
    for _ in range(3):
        assert httpx.post(keyed.url + CHAT, json=QUESTION, headers=bearer(KEY_B)).status_code == 200
    limited = [e for e in keyed.traffic() if e["status"] == 429]
    assert limited and all(e["client"] == "limited" for e in limited)
    # A wrong key is a 401, never a 429 that would tell a guesser the key exists.
    assert httpx.post(keyed.url + CHAT, json=QUESTION, headers=bearer("wrong")).status_code == 401


def test_per_profile_limit_is_shared_by_every_client(keyed: RunningGateway) -> None:
    shared = {**QUESTION, "model": "shared"}
    statuses = [
        httpx.post(keyed.url + CHAT, json=shared, headers=bearer(KEY_B)).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # burst ceil(6 / 2) = 3
    refused = httpx.post(keyed.url + CHAT, json=shared, headers=bearer(KEY_B))
    assert_limited(refused, "profile")
    assert "shared" in refused.json()["error"]["message"]
    # The default profile has no limit of its own.
    assert httpx.post(keyed.url + CHAT, json=QUESTION, headers=bearer(KEY_B)).status_code == 200
    assert keyed.traffic()[0]["status"] == 200 and keyed.traffic()[1]["status"] == 429


STREAM_CLIENTS = """
[[clients]]
name = "streamer"
key_env = "KEY_A"
profile = "default"
max_concurrent_streams = 1
"""


def test_concurrent_streams_per_client_are_capped_and_released(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url) + STREAM_CLIENTS, env={"KEY_A": KEY_A})
    fake.script(NeverEndingStream(interval=0.05))
    stream = {**QUESTION, "stream": True}
    with httpx.stream("POST", gw.url + CHAT, json=stream, headers=bearer(KEY_A), timeout=10) as first:
        assert first.status_code == 200
        chunks = first.iter_bytes()  # keep a reference: a dropped iterator closes the response
        next(chunks)
        second = httpx.post(gw.url + CHAT, json=stream, headers=bearer(KEY_A))
        assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
        assert second.headers["x-ratelimit-scope"] == "streams" and second.headers["retry-after"] == "1"
        messages = httpx.post(
            gw.url + "/v1/messages", json={**ANTHROPIC_QUESTION, "stream": True}, headers=bearer(KEY_A)
        )
        assert messages.status_code == 429 and messages.json()["error"]["type"] == "rate_limit_error"
        # A buffered answer is not a stream: still served.
        assert httpx.post(gw.url + CHAT, json=QUESTION, headers=bearer(KEY_A)).status_code == 200
    fake.wait_until(lambda: fake.disconnects == 1)
    # The slot came back when the client went away; a failed stream gives it back too.
    for _ in range(3):
        again = httpx.post(gw.url + CHAT, json=stream, headers=bearer(KEY_A))
        assert again.status_code == 200 and "[DONE]" in again.text
    # The last slot comes back when the server has sent the end, which may be just after the client
    # read it.
    fake.wait_until(lambda: gw.gateway._client_api.limit_stores.streams.open("streamer") == 0, timeout=2)


def test_limits_off_cost_no_state(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    for _ in range(20):
        assert httpx.post(gw.url + CHAT, json=QUESTION).status_code == 200
    stores = gw.gateway._client_api.limit_stores
    assert len(stores.ip) == len(stores.client) == len(stores.profile) == 0  # type: ignore[arg-type]


async def test_memory_store_is_usable_through_the_async_interface() -> None:
    store = MemoryBuckets()
    waits = await asyncio.gather(*(store.take("k", 1.0, 2.0) for _ in range(3)))
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
