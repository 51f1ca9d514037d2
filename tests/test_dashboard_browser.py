"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Each test loads the page from a real gateway, sends traffic through the gateway's client port and
waits for what an operator would see: rows arriving live, markup shown as text, the token prompt,
reload errors, backend probes. A missing browser is a failure, not a skip: CI installs it.
Screenshots go to ``test-artifacts/`` (look at them; they are not compared).
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status
from .gateway import RunningGateway, admin_token_gateway, config_text, openai_backend_config

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ADMIN_TOKEN = "dash-admin-token-7c1e"
MARKUP_MODEL = '<script>window.__pwned = "model"</script>'
MARKUP_ERROR = "<img src=x onerror=\"window.__pwned = 'error'\">"
MARKUP_TIER = '<b onmouseover="window.__pwned = 1">bold:tier</b>'


def chat(gw: RunningGateway, model: str, *, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10).status_code


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page, animations="disabled")


def open_dashboard(page: Page, gw: RunningGateway) -> None:
    page.goto(gw.admin_url + "/")
    expect(page.locator("#conn")).to_have_text("live")


def test_rows_arrive_live_and_markup_is_shown_as_text(
    start_gateway: StartGateway, fake: OpenAIBackend, page: Page
) -> None:
    body = openai_backend_config(fake.url).replace('"local:fast"', f"'{MARKUP_TIER}'")
    gw = start_gateway(body)
    open_dashboard(page, gw)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    fake.script(Reply(text="hi"), Status(400, message=MARKUP_ERROR))
    assert chat(gw, "hint:fast") == 200
    assert chat(gw, "hint:cloud") == 400  # an upstream 4xx is passed on
    assert chat(gw, MARKUP_MODEL) == 404

    rows = page.locator("tbody.entry")
    expect(rows).to_have_count(3)
    newest = rows.first
    expect(newest).to_contain_text(MARKUP_MODEL)  # the literal text, newest first
    expect(newest).to_contain_text("404")
    expect(rows.nth(1)).to_contain_text(MARKUP_ERROR)  # a failed row shows its error
    expect(rows.nth(1)).to_contain_text("400")
    expect(rows.nth(2)).to_contain_text(MARKUP_TIER)
    expect(page.locator("#ladder")).to_contain_text(MARKUP_TIER)

    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, [onerror], [onmouseover]").count() == 0

    expect(page.locator("#tiles")).to_contain_text("3 since start")  # the figures follow
    screenshot(page, "dashboard-desktop.png")
    rows.nth(2).click()  # the full routing decision of a served request
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(detail).to_contain_text("Routing decision")
    expect(detail).to_contain_text("fast-model")
    screenshot(page, "dashboard-detail.png")


def test_stats_ladder_and_charts_follow_the_traffic(
    start_gateway: StartGateway, fake: OpenAIBackend, page: Page
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    open_dashboard(page, gw)
    rungs = page.locator("#ladder li.rung")
    expect(rungs).to_have_count(2)
    expect(rungs.first).to_contain_text("local:fast")  # cheapest first
    expect(rungs.first).to_contain_text("hint:fast")  # its alias
    expect(rungs.first).to_contain_text("default: classifier")
    for _ in range(4):
        assert chat(gw, "hint:cloud") == 200
    assert chat(gw, "hint:fast", stream=True) == 200
    expect(page.locator("#tiles")).to_contain_text("5 since start")
    expect(rungs.nth(1)).not_to_contain_text("rate 0/s")
    canvas_drawn = "document.getElementById('chart-rate').width > 0"
    page.wait_for_function(canvas_drawn)


def test_token_prompt_keeps_the_token_in_session_storage_and_sends_it_as_bearer(
    start_gateway: StartGateway, fake: OpenAIBackend, page: Page
) -> None:
    gw = admin_token_gateway(start_gateway, fake.url, ADMIN_TOKEN)
    calls: list[tuple[str, str | None]] = []
    page.on("request", lambda r: calls.append((r.url, r.headers.get("authorization"))))
    page.goto(gw.admin_url + "/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()

    page.fill("#token-input", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_contain_text("not valid")
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#conn")).to_have_text("live")
    assert chat(gw, "hint:fast") == 200
    expect(page.locator("tbody.entry")).to_have_count(1)
    assert page.evaluate("sessionStorage.getItem('lmg.adminToken')") == ADMIN_TOKEN

    page.reload()  # same tab: the token is remembered, no prompt
    expect(page.locator("#conn")).to_have_text("live")
    expect(dialog).to_be_hidden()

    api_calls = [(url, auth) for url, auth in calls if "/admin/" in url]
    assert api_calls, "the page made no admin API call"
    assert all(ADMIN_TOKEN not in url for url, _ in calls)
    authorised = [auth for _, auth in api_calls if auth == f"Bearer {ADMIN_TOKEN}"]
    assert len(authorised) >= 4  # health, config, stats, the live feed


def test_reload_button_shows_every_validation_error_then_success(
    start_gateway: StartGateway, fake: OpenAIBackend, page: Page
) -> None:
    body = openai_backend_config(fake.url)
    gw = start_gateway(body)
    open_dashboard(page, gw)
    broken = body.replace('backend = "mock"', 'backend = "olama"', 1)
    broken += '\n[[clients]]\nkey_env = "K"\nprofile = "<i>nowhere</i>"\n'
    gw.config_path.write_text(config_text(broken))

    page.click("#reload-btn")
    result = page.locator("#reload-result .notice.bad")
    expect(result).to_contain_text("Reload refused")
    problems = result.locator("li")
    expect(problems.filter(has_text="olama")).to_have_count(1)
    expect(problems.filter(has_text="<i>nowhere</i>")).to_have_count(1)
    assert result.locator("i").count() == 0
    screenshot(page, "dashboard-reload-refused.png")

    gw.config_path.write_text(config_text(body.replace('"hint:cloud"', '"hint:new"')))
    page.click("#reload-btn")
    expect(page.locator("#reload-result .notice.good")).to_contain_text("Config reloaded")
    page.click("#config-details summary")
    expect(page.locator("#config-view")).to_contain_text("hint:new")


def test_backends_show_probe_results_and_probe_now(start_gateway: StartGateway, page: Page) -> None:
    with OpenAIBackend() as up, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        gw = start_gateway(
            f"""
            [backends.up]
            base_url = "{up.url}"
            [backends.dead]
            base_url = "{dead_url}"
            [[tiers]]
            name = "t"
            backend = "up"
            model = "m"
            """
        )
        open_dashboard(page, gw)  # the page probes once on load
        up_row = page.locator("#backends tr[data-backend=up]")
        dead_row = page.locator("#backends tr[data-backend=dead]")
        expect(up_row).to_contain_text("up")
        expect(dead_row).to_contain_text("down")
        probes_before = len(up.requests_to("/v1/models"))
        up_row.get_by_role("button", name="Probe").click()
        expect(up_row.get_by_role("button", name="Probe")).to_be_enabled()
        assert len(up.requests_to("/v1/models")) == probes_before + 1


def test_phone_width_has_no_sideways_scroll(
    start_gateway: StartGateway, fake: OpenAIBackend, browser: Browser
) -> None:
    gw = start_gateway(openai_backend_config(fake.url))
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    try:
        phone = context.new_page()
        open_dashboard(phone, gw)
        fake.script(Status(500))
        assert chat(gw, "hint:fast") == 502
        assert chat(gw, "hint:cloud") == 200
        expect(phone.locator("tbody.entry")).to_have_count(2)
        width = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert width <= 0
        expect(phone.locator("#tiles")).to_contain_text("2 since start")
        screenshot(phone, "dashboard-phone.png", full_page=True)
    finally:
        context.close()


def test_the_page_says_so_when_the_gateway_goes_away(
    start_gateway: StartGateway, fake: OpenAIBackend, page: Page
) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra="drain_timeout_ms = 8000\n")
    open_dashboard(page, gw)
    gw.stop()  # the open feed does not hold up the drain, and the page notices at once
    expect(page.locator("#conn")).to_have_text("reconnecting", timeout=3_000)
    expect(page.locator("#conn")).to_have_text("offline")
