"""Hot reload: the polling watcher (config file, conf.d/, profiles/), SIGHUP and POST /admin/reload.

A reload validates first and swaps atomically; a broken file keeps the old config and is reported once
per broken content, not at every poll; client keys, the admin token, rate limits and the server limits
come from the new config; requests in flight finish on the snapshot they started with."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lm_gateway.config.schema import GatewayConfig
from lm_gateway.config.watch import ConfigWatcher, fingerprint

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Stream
from .gateway import RunningGateway, config_text, free_port, openai_backend_config

CHAT = "/v1/chat/completions"
WATCH = "watch_interval_ms = 100\n"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


# -- the watcher on its own ----------------------------------------------------------------------------


class Reloads:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> list[str]:
        self.count += 1
        return []


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "profiles").mkdir()
    config = tmp_path / "config.toml"
    config.write_text("[gateway]\nclient_port = 1\n")
    (tmp_path / "profiles" / "a.toml").write_text('mode = "dispatch"\n')
    return config


async def test_the_watcher_sees_every_file_the_loader_reads(layout: Path) -> None:
    reloads = Reloads()
    watcher = ConfigWatcher(layout, GatewayConfig, reloads)
    watcher._seen = fingerprint(layout, None)
    assert not await watcher.poll()
    # Same size, same second: only the content tells.
    layout.write_text("[gateway]\nclient_port = 2\n")
    assert await watcher.poll() and reloads.count == 1
    (layout.parent / "conf.d" / "10-extra.toml").write_text("[aliases]\n")  # a new file
    assert await watcher.poll()
    (layout.parent / "profiles" / "a.toml").write_text('mode = "reply"\n')
    assert await watcher.poll()
    (layout.parent / "profiles" / "a.toml").unlink()  # a removed file
    assert await watcher.poll()
    os.utime(layout, (time.time() + 10, time.time() + 10))  # touched, unchanged
    (layout.parent / "conf.d" / "notes.txt").write_text("not toml")  # not read by the loader
    assert not await watcher.poll()
    assert reloads.count == 4


async def test_the_watcher_follows_a_custom_profile_dir(layout: Path) -> None:
    custom = layout.parent / "elsewhere"
    custom.mkdir()
    reloads = Reloads()
    settings = GatewayConfig(profile_dir="elsewhere")
    watcher = ConfigWatcher(layout, lambda: settings, reloads)
    watcher._seen = fingerprint(layout, "elsewhere")
    (layout.parent / "profiles" / "a.toml").write_text("ignored = true\n")
    assert not await watcher.poll()
    (custom / "b.toml").write_text('mode = "dispatch"\n')
    assert await watcher.poll()


async def test_the_watcher_waits_for_files_to_settle(layout: Path) -> None:
    reloads = Reloads()
    watcher = ConfigWatcher(layout, GatewayConfig, reloads)
    watcher._seen = fingerprint(layout, None)

    async def write_in_steps() -> None:
        for step in range(3):
            layout.write_text(f"[gateway]\nclient_port = {10 + step}\n")
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(write_in_steps())
    await asyncio.sleep(0.01)
    assert await watcher.poll()
    await writer
    assert reloads.count == 1
    assert not await watcher.poll()  # the last step was already taken in


# -- through a running gateway ---------------------------------------------------------------------------


def chat(
    gw: RunningGateway, model: str = "hint:fast", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    return httpx.post(gw.url + CHAT, json=body, headers=headers or {}, timeout=10)


def test_an_edited_file_is_reloaded_and_a_broken_one_reported_once(
    start_gateway: StartGateway, fake: OpenAIBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = openai_backend_config(fake.url)
    gw = start_gateway(body, gateway_extra=WATCH)
    gw.config_path.write_text(config_text(body.replace('"hint:cloud"', '"hint:new"'), gateway_extra=WATCH))
    wait_for(lambda: chat(gw, "hint:new").status_code == 200)
    assert chat(gw, "hint:cloud").status_code == 404

    broken = body.replace('backend = "mock"', 'backend = "olama"', 1)
    gw.config_path.write_text(config_text(broken, gateway_extra=WATCH))
    wait_for(lambda: "config reload refused" in caplog.text)
    time.sleep(1.0)  # ten more polls of the same broken file
    assert caplog.text.count("config reload refused") == 1
    assert caplog.text.count("unknown backend 'olama'") == 1
    assert chat(gw, "hint:new").status_code == 200  # the old config keeps serving

    gw.config_path.write_text(config_text(body, gateway_extra=WATCH))
    wait_for(lambda: chat(gw, "hint:cloud").status_code == 200)


def test_conf_d_and_profile_files_are_watched(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    gw = start_gateway(openai_backend_config(fake.url), gateway_extra=WATCH)
    base = gw.config_path.parent
    (base / "conf.d").mkdir()
    (base / "conf.d" / "50-alias.toml").write_text('[aliases]\n"hint:extra" = "local:fast"\n')
    wait_for(lambda: chat(gw, "hint:extra").status_code == 200)
    (base / "profiles").mkdir()
    (base / "profiles" / "canned.toml").write_text('mode = "reply"\nreply_message = "from a file"\n')
    wait_for(lambda: chat(gw, "canned").status_code == 200)
    assert "from a file" in chat(gw, "canned").text


def test_a_rotated_secret_file_is_picked_up(
    start_gateway: StartGateway, fake: OpenAIBackend, tmp_path: Path
) -> None:
    key = tmp_path / "secrets" / "mock-key"
    key.parent.mkdir()
    key.write_text("sk-before-rotation\n")
    extra = 'api_key_secret = { source = "file", path = "secrets/mock-key" }'  # relative to the config
    gw = start_gateway(openai_backend_config(fake.url, extra=extra), gateway_extra=WATCH)
    assert chat(gw).status_code == 200
    assert fake.last_request.header("authorization") == "Bearer sk-before-rotation"
    key.write_text("sk-after-rotation\n")  # e.g. a Kubernetes Secret volume updated in place

    def rotated() -> bool:
        return (
            chat(gw).status_code == 200
            and fake.last_request.header("authorization") == "Bearer sk-after-rotation"
        )

    wait_for(rotated)


def test_watching_can_be_turned_off(start_gateway: StartGateway, fake: OpenAIBackend) -> None:
    body = openai_backend_config(fake.url)
    off = WATCH + "watch_config = false\n"
    gw = start_gateway(body, gateway_extra=off)
    gw.config_path.write_text(config_text(body.replace('"hint:cloud"', '"hint:new"'), gateway_extra=off))
    time.sleep(0.6)
    assert chat(gw, "hint:new").status_code == 404
    assert httpx.post(gw.admin_url + "/admin/reload").status_code == 200  # explicit reloads still work
    assert chat(gw, "hint:new").status_code == 200


CLIENT = """
[[clients]]
name = "app"
key_env = "APP_KEY"
profile = "default"
rate_limit_rpm = {rpm}
"""


def test_keys_admin_token_and_limits_come_from_the_new_config(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    env = {"APP_KEY": "key-one", "ADMIN": "admin-one"}
    extra = 'admin_token_env = "ADMIN"\n'
    body = openai_backend_config(fake.url)
    gw = start_gateway(body + CLIENT.format(rpm=2), env=env, gateway_extra=extra)  # burst 1
    reload_url = gw.admin_url + "/admin/reload"
    assert chat(gw, headers={"Authorization": "Bearer key-one"}).status_code == 200
    assert chat(gw, headers={"Authorization": "Bearer key-one"}).status_code == 429

    # Same limit: the bucket keeps its level across a reload.
    assert httpx.post(reload_url, headers={"Authorization": "Bearer admin-one"}).status_code == 200
    assert chat(gw, headers={"Authorization": "Bearer key-one"}).status_code == 429

    # Rotated key and token, a new limit.
    gw.env.update({"APP_KEY": "key-two", "ADMIN": "admin-two"})
    gw.config_path.write_text(config_text(body + CLIENT.format(rpm=600), gateway_extra=extra))
    assert httpx.post(reload_url, headers={"Authorization": "Bearer admin-one"}).status_code == 200
    assert chat(gw, headers={"Authorization": "Bearer key-one"}).status_code == 401
    for _ in range(5):
        assert chat(gw, headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert httpx.post(reload_url, headers={"Authorization": "Bearer admin-one"}).status_code == 401
    assert httpx.post(reload_url, headers={"Authorization": "Bearer admin-two"}).status_code == 200

    # Limits removed altogether: nothing is refused any more.
    gw.config_path.write_text(config_text(body + CLIENT.format(rpm=0), gateway_extra=extra))
    assert httpx.post(reload_url, headers={"Authorization": "Bearer admin-two"}).status_code == 200
    for _ in range(10):
        assert chat(gw, headers={"Authorization": "Bearer key-two"}).status_code == 200


def test_a_stream_in_flight_finishes_on_its_snapshot(
    start_gateway: StartGateway, fake: OpenAIBackend
) -> None:
    body = openai_backend_config(fake.url)
    gw = start_gateway(body, gateway_extra=WATCH)
    fake.script(Stream(chunks=["one ", "two ", "three"], delay=0.3))
    request = {"model": "hint:fast", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", gw.url + CHAT, json=request, timeout=10) as resp:
        lines = resp.iter_lines()
        next(line for line in lines if '"one ' in line)
        # The tier vanishes from the config while the stream is being sent.
        gw.config_path.write_text(
            config_text(body.replace('"local:fast"', '"local:gone"'), gateway_extra=WATCH)
        )
        rest = "\n".join(lines)
    assert '"three"' in rest and "[DONE]" in rest
    wait_for(lambda: any(t.name == "local:gone" for t in gw.gateway.state.config.tiers))


def test_sighup_and_the_watcher_reload_a_real_process(tmp_path: Path, fake: OpenAIBackend) -> None:
    body = openai_backend_config(fake.url)
    path = tmp_path / "config.toml"
    watch_off = "watch_config = false\n"
    path.write_text(config_text(body, gateway_extra=watch_off))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "LMG_CONFIG"},
        "LMG_CLIENT_PORT": str(port),
        "LMG_ADMIN_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lm_gateway", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def status(model: str) -> int:
        try:
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            return httpx.post(url + CHAT, json=body, timeout=2).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_for(lambda: status("hint:fast") == 200, timeout=15)
        path.write_text(config_text(body.replace('"hint:cloud"', '"hint:hup"'), gateway_extra=watch_off))
        time.sleep(0.3)
        assert status("hint:hup") == 404  # not watched: waits for the signal
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: status("hint:hup") == 200)
        # Turned on by that reload, the watcher takes the next edit by itself.
        path.write_text(config_text(body.replace('"hint:cloud"', '"hint:watched"'), gateway_extra=WATCH))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: status("hint:watched") == 200)
        path.write_text(config_text(body.replace('"hint:cloud"', '"hint:later"'), gateway_extra=WATCH))
        wait_for(lambda: status("hint:later") == 200)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert output.count("config reloaded") >= 3
