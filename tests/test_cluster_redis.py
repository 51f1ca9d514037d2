"""Several gateway instances sharing state through a real Redis server (``[gateway] redis_url``).

Two in-process gateways on their own ports, one real ``redis-server`` and one fake OpenAI upstream,
all over real sockets: a shared rate limit, the cluster's traffic on each dashboard, a circuit opened
on one instance respected by the other, a shared spend cap and escalation budget, and what happens
when Redis dies and comes back (the documented behaviour: serve on, fall back to per-instance state,
resume when Redis answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lm_gateway.cluster.limits import TokenBuckets
from lm_gateway.cluster.link import RedisLink
from lm_gateway.config import ConfigError, load_config

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import NeverEndingStream, Reply, Status
from .gateway import DEMO, RunningGateway, config_text, openai_backend_config
from .redis_server import PASSWORD, RedisServer

KEY_A, KEY_B = "sk-client-a-1111", "sk-client-b-2222"


def cluster_extra(name: str, extra: str = "") -> str:
    return f"""
        redis_url = {{ source = "env", var = "LMG_REDIS_URL" }}
        instance_name = "{name}"
        {extra}
        """


def two_instances(
    start_gateway: StartGateway, redis: RedisServer, body: str, gateway_extra: str = ""
) -> tuple[RunningGateway, RunningGateway]:
    env = {"LMG_REDIS_URL": redis.url, "KEY_A": KEY_A}
    prefix = f'redis_prefix = "p{time.monotonic_ns()}"\n'
    first = start_gateway(body, env=env, gateway_extra=cluster_extra("gw-a", gateway_extra) + prefix)
    second = start_gateway(body, env=env, gateway_extra=cluster_extra("gw-b", gateway_extra) + prefix)
    return first, second


CLIENT = """
[[clients]]
name = "team"
key_env = "KEY_A"
profile = "default"
{limits}
"""


def chat(
    gw: RunningGateway, key: str | None = KEY_A, model: str = "hint:fast", text: str = "hi"
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=15)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_instances_share_one_rate_limit(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    # 60 per minute: a bucket of 30, refilled at one per second. Each instance alone would take 30.
    body = openai_backend_config(fake.url) + CLIENT.format(limits="rate_limit_rpm = 60")
    a, b = two_instances(start_gateway, redis_server, body)
    started = time.monotonic()
    replies: dict[str, list[httpx.Response]] = {"a": [], "b": []}
    for index in range(40):
        name, gw = ("a", a) if index % 2 == 0 else ("b", b)
        replies[name].append(chat(gw))
    elapsed = time.monotonic() - started
    statuses = {name: [reply.status_code for reply in got] for name, got in replies.items()}
    accepted = sum(status == 200 for codes in statuses.values() for status in codes)
    # The whole cluster stays within the bucket (plus what refilled while the test ran).
    assert 30 <= accepted <= 30 + int(elapsed) + 1, (accepted, elapsed)
    assert 429 in statuses["a"] and 429 in statuses["b"]
    # A refusal from the run itself: a request sent afterwards may find a token refilled meanwhile.
    refused = next(reply for reply in reversed(replies["a"]) if reply.status_code == 429)
    assert refused.headers["x-ratelimit-scope"] == "client"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_each_dashboard_shows_the_cluster_traffic(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    a, b = two_instances(start_gateway, redis_server, openai_backend_config(fake.url))
    assert chat(a, key=None, text="from a").status_code == 200
    assert chat(b, key=None, model="hint:cloud").status_code == 200

    def seen_on_b() -> list[dict[str, Any]]:
        entries = b.admin_get("/admin/traffic")["entries"]
        return entries if len(entries) == 2 else []

    entries = wait_for(seen_on_b, what="both instances' entries on b")
    assert sorted(e["instance"] for e in entries) == ["gw-a", "gw-b"]
    assert {e["instance"]: e["tier"] for e in entries} == {"gw-a": "local:fast", "gw-b": "cloud:economy"}
    own = b.admin_get("/admin/traffic?scope=instance")
    assert own["scope"] == "instance" and [e["tier"] for e in own["entries"]] == ["cloud:economy"]
    stats = b.admin_get("/admin/stats")
    assert stats["scope"] == "cluster" and stats["totals"]["total"] == 2
    assert b.admin_get("/admin/stats?scope=instance")["totals"]["total"] == 1
    cluster = wait_for(lambda: (v := a.admin_get("/admin/cluster"))["instances"] == ["gw-a", "gw-b"] and v)
    assert cluster["redis"] == "up" and cluster["instance"] == "gw-a"
    assert httpx.get(b.admin_url + "/admin/traffic?scope=everyone").status_code == 400


def test_a_reload_resizes_the_cluster_traffic_view_like_the_instances_own(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    a, _ = two_instances(
        start_gateway, redis_server, openai_backend_config(fake.url), "traffic_log_capacity = 10"
    )
    for index in range(4):
        assert chat(a, key=None, text=f"before {index}").status_code == 200
    wait_for(lambda: len(a.admin_get("/admin/traffic")["entries"]) == 4, what="4 entries in the cluster view")
    config = a.config_path.read_text()
    a.config_path.write_text(config.replace("traffic_log_capacity = 10", "traffic_log_capacity = 3"))
    assert httpx.post(a.admin_url + "/admin/reload").status_code == 200
    for scope in ("cluster", "instance"):
        assert len(a.admin_get(f"/admin/traffic?scope={scope}")["entries"]) == 3, scope
    for index in range(2):
        reply = chat(a, key=None, text=f"after {index}")
        assert reply.status_code == 200
    newest = reply.headers["x-request-id"]

    def view_with_the_newest() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = a.admin_get("/admin/traffic")["entries"]
        return entries if entries and entries[0]["id"] == newest else []

    assert len(wait_for(view_with_the_newest, what="the newest entry in the cluster view")) == 3


def test_a_circuit_opened_on_one_instance_is_skipped_by_the_other(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    extra = "circuit_min_failures = 2\ncircuit_cooldown_ms = 60000\nmax_retries = 0\n"
    a, b = two_instances(start_gateway, redis_server, openai_backend_config(fake.url), extra)
    fake.set_default(Status(500))
    assert [chat(a, key=None).status_code for _ in range(2)] == [502, 502]
    assert chat(a, key=None).json()["error"]["code"] == "backend_circuit_open"

    def opened_elsewhere_on_b() -> bool:
        backends = b.admin_get("/admin/stats")["backends"]
        return any((item.get("circuit") or {}).get("opened_elsewhere") for item in backends)

    wait_for(opened_elsewhere_on_b, what="b to learn that a opened the circuit")
    calls = len(fake.requests)
    for _ in range(3):  # b skips the backend without spending a request on it
        response = chat(b, key=None)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "backend_circuit_open"
    assert len(fake.requests) == calls


def test_spend_cap_is_shared_by_the_instances(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    # One dollar per prompt token: the first answer alone spends the day's cap of $2.
    body = openai_backend_config(fake.url).replace(
        'model = "fast-model"', 'model = "fast-model"\ninput_cost_per_mtok = 1000000.0'
    ) + CLIENT.format(limits="max_spend_usd_per_day = 2.0")
    a, b = two_instances(start_gateway, redis_server, body)
    assert chat(a).status_code == 200

    def refused_on_b() -> httpx.Response | None:
        response = chat(b)
        return response if response.status_code == 429 else None

    response = wait_for(refused_on_b, what="b to refuse the client a charged")
    error = response.json()["error"]
    assert error["code"] == "spend_limit_exceeded" and "cap is $2" in error["message"]
    assert response.headers["x-ratelimit-scope"] == "spend"
    assert 0 < int(response.headers["retry-after"]) <= 86_400
    assert chat(a).status_code == 429


def test_escalation_budget_is_shared_by_the_instances(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url).replace('mode = "dispatch"', 'mode = "escalate"') + CLIENT.format(
        limits="max_escalations_per_minute = 1"
    )
    a, b = two_instances(start_gateway, redis_server, body)
    good = Reply(text="A complete and sufficiently long answer to the question.")
    fake.script(Reply(text=""), good)  # a: the cheap tier's empty answer escalates (spends the budget)
    first = chat(a, model="default")
    assert first.status_code == 200 and first.headers["x-lmg-tier"] == "cloud:economy"
    fake.script(Reply(text=""), good)
    second = chat(b, model="default")  # b: the shared budget is spent, so no step up
    assert second.status_code == 200
    assert second.headers["x-lmg-tier"] == "local:fast"
    assert "cloud:economy" not in second.headers["x-lmg-route"]  # not even tried
    assert len(fake.requests) == 3


def test_redis_outage_serves_on_per_instance_then_recovers(
    redis_server: RedisServer,
    start_gateway: StartGateway,
    fake: OpenAIBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    body = openai_backend_config(fake.url) + CLIENT.format(limits="rate_limit_rpm = 6")  # bucket of 3
    a, b = two_instances(start_gateway, redis_server, body)
    assert chat(a).status_code == 200  # one of the shared 3
    wait_for(lambda: len(b.admin_get("/admin/traffic")["entries"]) == 1, what="the entry on b")

    redis_server.kill()
    started = time.monotonic()
    # Documented: traffic is never refused because of Redis; limits fall back to each instance's own
    # bucket (full: this instance never used its local one), so a gets 3 more, then 429.
    statuses = [chat(a).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert time.monotonic() - started < 5
    assert chat(b).status_code == 200  # b: its own bucket, also full
    assert a.admin_get("/admin/cluster")["redis"] == "down"
    assert b.admin_get("/admin/cluster")["redis"] == "down"
    assert "lmg_redis_up 0.0" in httpx.get(a.admin_url + "/metrics").text

    redis_server.start()  # same port, empty (no persistence), as after a crash
    wait_for(lambda: a.admin_get("/admin/cluster")["redis"] == "up", what="a to reconnect")
    wait_for(lambda: b.admin_get("/admin/cluster")["redis"] == "up", what="b to reconnect")
    assert "lmg_redis_up 1.0" in httpx.get(a.admin_url + "/metrics").text

    # The entries recorded during the outage were queued and are published now: b sees a's five
    # requests made while Redis was down (three answered, two refused) besides the first one.
    def outage_entries() -> list[dict[str, Any]]:
        entries = b.admin_get("/admin/traffic")["entries"]
        return [e for e in entries if e["instance"] == "gw-a"] if len(entries) >= 6 else []

    from_a = wait_for(outage_entries, what="a's queued entries on b")
    assert sorted(e["status"] for e in from_a) == [200, 200, 200, 200, 429, 429]
    # Shared again: a fresh shared bucket of 3 for both instances together.
    statuses = [chat(gw).status_code for gw in (a, b, a, b)]
    assert statuses.count(200) == 3 and statuses[-1] == 429
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "redis unreachable" in messages and "redis reachable again" in messages
    assert PASSWORD not in messages and PASSWORD not in caplog.text


def test_recovery_under_concurrent_load_does_not_flap(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    # Many pooled Redis connections before the outage: after Redis restarts every one of them is
    # dead, and none may take Redis "down" again once it is back.
    body = openai_backend_config(fake.url) + CLIENT.format(limits="rate_limit_rpm = 600000")
    a, _ = two_instances(start_gateway, redis_server, body)

    def burst() -> list[int]:
        with ThreadPoolExecutor(24) as pool:
            return list(pool.map(lambda _: chat(a).status_code, range(48)))

    assert burst() == [200] * 48
    redis_server.kill()
    assert chat(a).status_code == 200
    redis_server.start()
    wait_for(lambda: a.admin_get("/admin/cluster")["redis"] == "up", what="a to reconnect")
    assert burst() == [200] * 48
    cluster = a.admin_get("/admin/cluster")
    assert (cluster["redis"], cluster["outages"]) == ("up", 1)


def test_redis_url_is_a_secret(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend, tmp_path: Path
) -> None:
    a, _ = two_instances(start_gateway, redis_server, openai_backend_config(fake.url))
    for path in ("/admin/config", "/admin/cluster", "/admin/stats", "/admin/traffic"):
        text = httpx.get(a.admin_url + path).text
        assert PASSWORD not in text and "redis://" not in text, path
    config = a.admin_get("/admin/config")
    assert config["redis_url_present"] is True
    assert config["gateway"]["redis_url"] == {"source": "env", "var": "LMG_REDIS_URL", "path": None}
    # A value that is not a Redis URL is refused at load, naming where it came from, not the value.
    path = tmp_path / "bad.toml"
    path.write_text(config_text(DEMO, gateway_extra='redis_url = { source = "env", var = "R" }\n'))
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"R": "http://user:hunter2-secret@example.com"})
    assert "env var R is not a Redis URL" in str(err.value) and "hunter2" not in str(err.value)
    for bad, problem in (
        ("redis://:hunter2-secret@redis:port/0", "host or port cannot be read"),
        ("redis://:hunter2-secret@/0", "no host name"),
        ("redis://:hunter2-secret@redis:6379/zero", "not a number"),
    ):
        with pytest.raises(ConfigError) as err:
            load_config(path, env={"R": bad})
        assert problem in str(err.value) and "hunter2" not in str(err.value), bad
    for good in ("redis://redis", "rediss://:pw@redis.example:6380/2", "unix:///run/redis.sock?db=1"):
        assert load_config(path, env={"R": good}).redis_url is not None, good


def test_missing_redis_url_secret_serves_per_instance(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra=cluster_extra("solo"))
    assert chat(gw, key=None).status_code == 200
    assert gw.admin_get("/admin/cluster") == {"enabled": False}
    assert any("LMG_REDIS_URL" in item for item in gw.admin_get("/admin/health")["missing_secrets"])
    assert httpx.get(gw.admin_url + "/admin/traffic?scope=cluster").status_code == 400


def test_token_bucket_is_atomic_under_concurrent_takes(redis_server: RedisServer) -> None:
    async def run() -> list[float]:
        link = RedisLink(redis_server.url, "atomic", 1.0)
        await link.start()
        try:
            buckets = TokenBuckets(link)
            waits = await asyncio.gather(*(buckets.take("k", 0.001, 10.0) for _ in range(60)))
            return [wait for _tokens, wait in waits]
        finally:
            await link.close()

    waits = asyncio.run(run())
    assert sum(wait == 0.0 for wait in waits) == 10
    assert all(wait > 0 for wait in waits if wait) and len(waits) == 60


def _open_stream(gw: RunningGateway) -> contextlib.AbstractContextManager[httpx.Response]:
    body = {"model": "hint:fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"authorization": f"Bearer {KEY_A}"}
    return httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=15)


def _refused_for_streams(gw: RunningGateway) -> bool:
    with _open_stream(gw) as resp:
        resp.read()
        return resp.status_code == 429 and resp.headers.get("x-ratelimit-scope") == "streams"


def test_two_instances_share_one_stream_cap(
    redis_server: RedisServer, start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url) + CLIENT.format(limits="max_concurrent_streams = 2")
    a, b = two_instances(start_gateway, redis_server, body)
    fake.script(NeverEndingStream(), NeverEndingStream())
    with contextlib.ExitStack() as held:
        on_a = held.enter_context(_open_stream(a))
        on_b = held.enter_context(_open_stream(b))
        assert on_a.status_code == on_b.status_code == 200
        # One open on each: the cap of 2 is reached for the cluster, on either instance.
        assert _refused_for_streams(a) and _refused_for_streams(b)
        with _open_stream(b) as refused:
            refused.read()
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
        on_a.close()  # a stream ends on A: its slot is free on B too
        fake.wait_until(lambda: fake.disconnects >= 1)
        wait_for(lambda: not _refused_for_streams(b), what="B to get A's freed slot")


def _streams(redis: RedisServer, prefix: str) -> Any:
    from lm_gateway.api.limits import StreamCounts
    from lm_gateway.cluster.limits import SharedStreams

    link = RedisLink(redis.url, prefix, 1.0)
    return link, lambda: SharedStreams(link, StreamCounts())


async def _acquire_soon(store: Any) -> Any:
    """A slot of "team" (cap 1) for ``store``, once a release elsewhere has reached Redis: sooner
    than the test's lease would expire (0.4 s), so that only the release can free it."""
    for _ in range(15):
        release = await store.acquire("team", 1)
        if release is not None:
            return release
        await asyncio.sleep(0.02)
    raise AssertionError("the released slot never became free")


def test_a_stream_lease_lasts_while_renewed_and_expires_when_its_holder_is_gone(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_gateway.cluster import limits as cluster_limits

    monkeypatch.setattr(cluster_limits, "LEASE_MS", 400)
    monkeypatch.setattr(cluster_limits, "RENEW_S", 0.1)

    async def run() -> None:
        link, store = _streams(redis_server, f"lease{time.monotonic_ns()}")
        await link.start()
        try:
            holder, other = store(), store()
            release = await holder.acquire("team", 1)
            assert release is not None and await other.acquire("team", 1) is None
            for _ in range(8):  # 1.2 s: three lease lengths, renewed all along
                await asyncio.sleep(0.15)
                await holder.renew()
            assert await other.acquire("team", 1) is None
            release()
            taken = await _acquire_soon(other)  # (the lease is removed in the background)
            crashed = store()  # takes the slot, then never renews nor gives it back
            taken()
            await _acquire_soon(crashed)
            assert await other.acquire("team", 1) is None
            await asyncio.sleep(0.6)
            back = await other.acquire("team", 1)
            assert back is not None
            # Redis lost the lease (an outage longer than a lease): put back when Redis is up again.
            await link.run(lambda redis: redis.delete(link.key("streams", "team")))
            assert await crashed.acquire("team", 1) is not None  # (a slot Redis no longer showed)
            await link.run(lambda redis: redis.delete(link.key("streams", "team")))
            await other.restore()
            assert await crashed.acquire("team", 1) is None
        finally:
            await link.close()

    asyncio.run(run())


def test_without_redis_stream_caps_are_counted_per_instance() -> None:
    from lm_gateway.api.limits import StreamCounts
    from lm_gateway.cluster.limits import SharedStreams

    async def run() -> None:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        link = RedisLink(f"redis://127.0.0.1:{port}/0", "down", 0.2)
        await link.start()
        try:
            store = SharedStreams(link, StreamCounts())
            first = await store.acquire("team", 2)
            assert first is not None and await store.acquire("team", 2) is not None
            assert await store.acquire("team", 2) is None
            first()
            assert await store.acquire("team", 2) is not None
        finally:
            await link.close()

    asyncio.run(run())


def test_without_redis_url_the_redis_client_is_never_imported(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(DEMO))
    code = (
        "import sys, asyncio\n"
        "from lm_gateway.config import load_config\n"
        "from lm_gateway.server import Gateway\n"
        "async def main():\n"
        f"    gw = Gateway(load_config({str(path)!r}))\n"
        "    await gw.start_admin(); await gw.start_client(); await gw.stop()\n"
        "asyncio.run(main())\n"
        "print('redis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_workers_share_the_limit_and_publish_through_their_supervisor(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_workers_processes import Workers

    monkeypatch.setenv("LMG_REDIS_URL", redis_server.url)
    monkeypatch.setenv("KEY_A", KEY_A)
    path = tmp_path / "config.toml"
    body = DEMO.replace(
        "[profiles.default]", CLIENT.format(limits="rate_limit_rpm = 60") + "\n[profiles.default]"
    )
    path.write_text(config_text(body, gateway_extra=cluster_extra("gw-w")))
    gw = Workers(path, workers=2)
    try:
        started = time.monotonic()
        headers = {"authorization": f"Bearer {KEY_A}"}
        statuses = [
            httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": "hint:fast", "messages": [{"role": "user", "content": "hi"}]},
                headers=headers,
                timeout=10,
            ).status_code
            for _ in range(45)
        ]
        elapsed = time.monotonic() - started
        # Without Redis each worker would have its own bucket of 30 (up to 60 accepted).
        assert 30 <= statuses.count(200) <= 30 + int(elapsed) + 1, (statuses.count(200), elapsed)

        def all_entries() -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = gw.get("/admin/traffic?limit=100")["entries"]
            return entries if len(entries) == 45 else []

        entries = wait_for(all_entries, what="every worker's entries in the cluster view")
        assert {e["instance"] for e in entries} == {"gw-w"}
        assert len({e["worker"] for e in entries}) == 2, "both workers served and share one bucket"
    finally:
        gw.stop()


def test_redis_url_from_a_file_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "redis-url").write_text("redis://:pw@redis:6379/0\n")
    path = tmp_path / "config.toml"
    path.write_text(config_text(DEMO, gateway_extra='redis_url = { source = "file", path = "redis-url" }\n'))
    config = load_config(path, env={})
    assert config.redis_url is not None and config.redis_url.reveal() == "redis://:pw@redis:6379/0"
    assert config.gateway.redis_url is not None and config.gateway.redis_url.path == str(
        tmp_path / "redis-url"
    )
