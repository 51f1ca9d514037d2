"""Fixtures shared by the tests: a gateway factory that cleans up after itself, a fake OpenAI
upstream, a real Redis server, and Debian's headless Chromium (driven by Playwright) for the
dashboard tests. A missing browser or ``redis-server`` is a failure, not a skip: CI installs them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from .fakes.openai_backend import OpenAIBackend
from .gateway import RunningGateway, config_text
from .redis_server import RedisServer

StartGateway = Callable[..., RunningGateway]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """``start_gateway(body_toml, env={...}, gateway_extra="...")`` → a running gateway."""
    running: list[RunningGateway] = []

    def start(body: str, *, env: Mapping[str, str] | None = None, gateway_extra: str = "") -> RunningGateway:
        path = tmp_path / f"config-{len(running)}.toml"
        path.write_text(config_text(body, gateway_extra=gateway_extra))
        gateway = RunningGateway(path, env or {}).start()
        running.append(gateway)
        return gateway

    yield start
    for gateway in reversed(running):
        gateway.stop()


@pytest.fixture
def fake() -> Iterator[OpenAIBackend]:
    """A fake OpenAI-compatible upstream (modules with their own ``fake`` use theirs)."""
    with OpenAIBackend() as backend:
        yield backend


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` of its own (request it before ``start_gateway``, so that it stops last)."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


CHROMIUM = os.environ.get("LMG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (see .ci/run)"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own session storage) that fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1360, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"script errors on the page: {errors}"
