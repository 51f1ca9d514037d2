"""The dashboard of a gateway in a cluster (``[gateway] redis_url``), in a real headless Chromium.

Two gateway instances share one real ``redis-server``; the page is instance B's. What an operator
sees: the cluster pill in the header (how many instances, whether Redis answers), every instance's
rows tagged with its name, the scope switch (the cluster or this instance only, which reconnects the
live feed), a circuit opened by the other instance, and, without Redis, a page exactly as before.
The browser fixtures are in conftest.py; the cluster helpers are the cluster tests'.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Status
from .gateway import openai_backend_config
from .redis_server import RedisServer
from .test_cluster_redis import chat, two_instances
from .test_dashboard_browser import open_dashboard, screenshot

# Stats reach the page every STATS_EVERY_S (2 s); Redis is noticed down within about a second.
REDIS_DOWN_MS = 6_000


def test_cluster_pill_instance_tags_scope_switch_and_redis_down(
    redis_server: RedisServer,
    start_gateway: StartGateway,
    fake: OpenAIBackend,
    page: Page,
) -> None:
    a, b = two_instances(start_gateway, redis_server, openai_backend_config(fake.url))
    assert chat(a, key=None).status_code == 200  # local:fast, on gw-a
    assert chat(b, key=None, model="hint:cloud").status_code == 200  # cloud:economy, on gw-b
    open_dashboard(page, b)

    pill = page.locator("#cluster-status")
    expect(page.locator("#cluster")).to_be_visible()
    expect(pill).to_have_text("cluster · 2 instances · redis up")
    expect(page.locator("#cluster [aria-pressed=true]")).to_have_text("cluster")
    rows = page.locator("tbody.entry")
    expect(rows).to_have_count(2)
    from_a = rows.filter(has=page.locator(".instance", has_text="gw-a"))
    from_b = rows.filter(has=page.locator(".instance", has_text="gw-b"))
    expect(from_a).to_contain_text("local:fast")
    expect(from_b).to_contain_text("cloud:economy")
    expect(page.locator("#tiles")).to_contain_text("2 since start")
    screenshot(page, "dashboard-cluster.png")

    def feed_with(scope: str):  # the live feed's request, reopened with the scope
        return lambda r: "/admin/traffic/stream" in r.url and f"scope={scope}" in r.url

    with page.expect_request(feed_with("instance")):
        page.get_by_role("button", name="this instance").click()
    expect(page.locator("#cluster [aria-pressed=true]")).to_have_text("this instance")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("cloud:economy")
    expect(rows).not_to_contain_text("local:fast")
    expect(page.locator("#tiles")).to_contain_text("1 since start")  # the figures are B's own
    expect(page.locator("#conn")).to_have_text("live")

    with page.expect_request(feed_with("cluster")):
        page.get_by_role("button", name="cluster", exact=True).click()
    expect(rows).to_have_count(2)
    expect(page.locator("#tiles")).to_contain_text("2 since start")

    redis_server.kill()
    expect(pill).to_have_text("cluster · instances unknown · redis down", timeout=REDIS_DOWN_MS)
    expect(pill).to_have_class(re.compile(r"\bpill-warn\b"))
    expect(page.locator("#conn")).to_have_text("live")  # the page itself is fine
    expect(rows).to_have_count(2)
    screenshot(page, "dashboard-cluster-redis-down.png")
    page.set_viewport_size({"width": 390, "height": 844})  # the header still fits a phone
    expect(pill).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(page, "dashboard-cluster-phone.png", full_page=True)


def test_a_circuit_opened_by_the_other_instance_says_so(
    redis_server: RedisServer,
    start_gateway: StartGateway,
    fake: OpenAIBackend,
    page: Page,
) -> None:
    extra = "circuit_min_failures = 2\ncircuit_cooldown_ms = 60000\nmax_retries = 0\n"
    a, b = two_instances(start_gateway, redis_server, openai_backend_config(fake.url), extra)
    fake.set_default(Status(500))
    assert [chat(a, key=None).status_code for _ in range(2)] == [502, 502]  # opens it on gw-a
    open_dashboard(page, b)
    row = page.locator("#backends tr[data-backend=mock]")
    expect(row).to_contain_text("open")
    expect(row).to_contain_text("opened elsewhere")


def test_without_redis_the_page_shows_no_cluster(
    start_gateway: StartGateway,
    fake: OpenAIBackend,
    page: Page,
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    open_dashboard(page, gw)
    assert chat(gw, key=None).status_code == 200
    expect(page.locator("tbody.entry")).to_have_count(1)
    expect(page.locator("#tiles")).to_contain_text("1 since start")
    expect(page.locator("#cluster")).to_be_hidden()
    expect(page.locator("#cluster-status")).to_have_text("")
    expect(page.locator("tbody.entry .instance")).to_have_count(0)
    expect(page.locator("#backends")).not_to_contain_text("elsewhere")
    assert not [url for url in urls if "scope=" in url]
