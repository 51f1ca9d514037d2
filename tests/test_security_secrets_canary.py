"""Secrets canary: distinctive secret values for every backend key, client key and the admin token; a
run that exercises everything (every protocol, streams, upstream errors that echo the key, wrong keys,
reloads, every admin endpoint) in-process and in a real subprocess; then no log line, traffic entry,
error body, admin or metrics response contains any canary, whole or in part."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fakes.anthropic_backend import AnthropicBackend
from .fakes.ollama_backend import OllamaBackend
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Reply, Status, StreamError
from .gateway import RunningGateway, config_text, free_port

CANARIES = {
    "OPENAI_KEY": "sk-canary-openai-Q7mV2xT9pL4w",
    "ANTHROPIC_KEY": "sk-ant-canary-R3nK8yZ1cF6d",
    "OLLAMA_KEY": "canary-ollama-H5jW0sD2gB7e",
    "CLIENT_ONE": "canary-client-one-U4tE9aM6vN1q",
    "CLIENT_TWO": "canary-client-two-P8rY3kL5zX2c",
    "ADMIN_TOKEN": "canary-admin-token-G1hS7dJ4fW9b",
}
FILE_CANARY = "sk-canary-file-secret-V6bN2mQ8wE3r"
ALL_CANARIES = [*CANARIES.values(), FILE_CANARY]


def fragments(secret: str) -> list[str]:
    """The secret and its distinctive middle part (a leak of a truncated key still counts)."""
    middle = secret[len(secret) // 2 - 6 : len(secret) // 2 + 6]
    return [secret, middle]


def assert_clean(where: str, text: str) -> None:
    for secret in ALL_CANARIES:
        for piece in fragments(secret):
            assert piece not in text, f"{where} contains (part of) a secret: {piece!r}"


class Collector(logging.Handler):
    """Every log record at DEBUG, formatted with its traceback, for the whole module."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[OpenAIBackend, AnthropicBackend, OllamaBackend, OpenAIBackend]]:
    with (
        OpenAIBackend(api_key=CANARIES["OPENAI_KEY"]) as openai_fake,
        AnthropicBackend(api_key=CANARIES["ANTHROPIC_KEY"]) as anthropic_fake,
        OllamaBackend(api_key=CANARIES["OLLAMA_KEY"]) as ollama_fake,
        OpenAIBackend(api_key=FILE_CANARY) as file_fake,
    ):
        yield openai_fake, anthropic_fake, ollama_fake, file_fake


def config_body(fakes: tuple[Any, ...], secret_file: Path) -> str:
    openai_fake, anthropic_fake, ollama_fake, file_fake = fakes
    return f"""
        [backends.oa]
        base_url = "{openai_fake.url}"
        api_key_env = "OPENAI_KEY"

        [backends.an]
        provider = "anthropic"
        base_url = "{anthropic_fake.url}"
        api_key_env = "ANTHROPIC_KEY"

        [backends.ol]
        provider = "ollama"
        base_url = "{ollama_fake.url}"
        api_key_env = "OLLAMA_KEY"

        [backends.fs]
        base_url = "{file_fake.url}"
        api_key_secret = {{ source = "file", path = "{secret_file}" }}

        [[tiers]]
        name = "t:oa"
        backend = "oa"
        model = "m-oa"

        [[tiers]]
        name = "t:an"
        backend = "an"
        model = "m-an"

        [[tiers]]
        name = "t:ol"
        backend = "ol"
        model = "m-ol"

        [[tiers]]
        name = "t:fs"
        backend = "fs"
        model = "m-fs"

        [profiles.default]
        mode = "dispatch"
        classifier = "t:oa"

        [profiles.other]
        mode = "dispatch"
        classifier = "t:an"

        [[clients]]
        name = "one"
        key_env = "CLIENT_ONE"
        profile = "default"
        rate_limit_rpm = 6000

        [[clients]]
        name = "two"
        key_env = "CLIENT_TWO"
        profile = "other"
        """


GATEWAY_EXTRA = 'admin_token_env = "ADMIN_TOKEN"\nhealth_window = 0\n'


def exercise(url: str, admin_url: str, fakes: tuple[Any, ...], config_path: Path) -> list[str]:
    """Everything a client, an operator and a faulty upstream can do; returns every body received."""
    openai_fake, anthropic_fake, ollama_fake, file_fake = fakes
    one = {"Authorization": f"Bearer {CANARIES['CLIENT_ONE']}"}
    two = {"x-api-key": CANARIES["CLIENT_TWO"]}
    admin = {"Authorization": f"Bearer {CANARIES['ADMIN_TOKEN']}"}
    bodies: list[str] = []

    def keep(resp: httpx.Response) -> httpx.Response:
        bodies.append(resp.text)
        bodies.append(str(resp.headers))
        return resp

    def chat(model: str, headers: dict[str, str], **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        return keep(httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10))

    for tier in ("t:oa", "t:an", "t:ol", "t:fs"):
        assert chat(tier, one).status_code == 200
        assert chat(tier, one, stream=True).status_code == 200
    message = {"model": "t:an", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    assert keep(httpx.post(url + "/v1/messages", json=message, headers=two)).status_code == 200
    assert (
        keep(httpx.post(url + "/v1/messages", json={**message, "stream": True}, headers=two)).status_code
        == 200
    )
    ollama = {"model": "t:ol", "messages": [{"role": "user", "content": "hi"}]}
    assert keep(httpx.post(url + "/api/chat", json=ollama, headers=one)).status_code == 200
    for path in ("/v1/models", "/api/tags", "/status", "/api/version"):
        keep(httpx.get(url + path, headers=one))

    # Upstreams that echo the gateway's key back, in every way an error can travel.
    for fake, tier in (
        (openai_fake, "t:oa"),
        (anthropic_fake, "t:an"),
        (ollama_fake, "t:ol"),
        (file_fake, "t:fs"),
    ):
        secret = fake.api_key
        for status in (400, 401, 403, 404, 429, 500, 503):
            fake.script(Status(status, message=f"Incorrect API key provided: {secret}"))
            chat(tier, one)
        fake.script(Status(500, body=f"<html>key={secret}</html>"))
        chat(tier, one)
        fake.script(StreamError(after=1, message=f"quota exceeded for {secret}"))
        chat(tier, one, stream=True)
        fake.script(Reply(text="fine"))
        chat(tier, one)

    # Wrong keys that contain the right ones, duplicate and oversized credentials.
    for headers in (
        {"Authorization": f"Bearer wrong-{CANARIES['CLIENT_ONE']}"},
        {"Authorization": f"Basic {CANARIES['CLIENT_ONE']}"},
        {"x-api-key": CANARIES["CLIENT_ONE"] + "x"},
        {"Authorization": "Bearer " + CANARIES["CLIENT_ONE"] * 4000},
    ):
        chat("t:oa", headers)
    chat("other", one)  # a profile the key may not use
    for headers in ({}, {"Authorization": f"Bearer {CANARIES['ADMIN_TOKEN']}x"}, admin):
        keep(httpx.get(admin_url + "/admin/config", headers=headers))

    # The operator's view of everything.
    for path in (
        "/admin",
        "/admin/health",
        "/admin/traffic?limit=10000",
        "/admin/config",
        "/admin/stats",
        "/admin/backends/health",
        "/metrics",
        "/admin/openapi.json",
    ):
        assert keep(httpx.get(admin_url + path, headers=admin, timeout=10)).status_code in (200, 207), path
    route = {"model": "t:oa", "messages": [{"role": "user", "content": "hi"}]}
    keep(httpx.post(admin_url + "/admin/route?client=one", json=route, headers=admin))
    with httpx.stream(
        "GET", admin_url + "/admin/traffic/stream?backlog=1000", headers=admin, timeout=10
    ) as feed:
        bodies.append(next(feed.iter_text()))
    assert keep(httpx.post(admin_url + "/admin/reload", headers=admin)).status_code == 200
    good = config_path.read_text()
    config_path.write_text(good.replace('backend = "oa"', 'backend = "nope"', 1))
    assert keep(httpx.post(admin_url + "/admin/reload", headers=admin)).status_code == 422
    config_path.write_text(good)
    assert keep(httpx.post(admin_url + "/admin/reload", headers=admin)).status_code == 200
    return bodies


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "fs.key"
    path.write_text(FILE_CANARY + "\n")
    return path


def test_no_secret_appears_anywhere_in_process(
    tmp_path: Path, fakes: tuple[Any, ...], secret_file: Path
) -> None:
    collector = Collector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    path = tmp_path / "config.toml"
    path.write_text(config_text(config_body(fakes, secret_file), gateway_extra=GATEWAY_EXTRA))
    gw = RunningGateway(path, dict(CANARIES)).start()
    try:
        bodies = exercise(gw.url, gw.admin_url, fakes, path)
        traffic = httpx.get(
            gw.admin_url + "/admin/traffic?limit=10000",
            headers={"Authorization": f"Bearer {CANARIES['ADMIN_TOKEN']}"},
        ).text
    finally:
        gw.stop()
        root.removeHandler(collector)
        root.setLevel(old_level)
    for fake in fakes:
        fake.reset()
    assert len(collector.lines) > 10 and any("reload" in line for line in collector.lines)
    assert_clean("the logs", "\n".join(collector.lines))
    assert_clean("the traffic log", traffic)
    assert '"client":"one"' in traffic  # names, not keys
    for body in bodies:
        assert_clean("a response", body)
    assert_clean("the config object", repr(gw.gateway.state.config))


def test_no_secret_appears_in_a_real_process_output(
    tmp_path: Path, fakes: tuple[Any, ...], secret_file: Path
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(config_body(fakes, secret_file), gateway_extra=GATEWAY_EXTRA))
    client_port, admin_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "LMG_CONFIG"},
        **CANARIES,
        "LMG_LOG_LEVEL": "debug",
        "LMG_CLIENT_PORT": str(client_port),
        "LMG_ADMIN_PORT": str(admin_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lm_gateway", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url, admin_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{admin_port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        bodies = exercise(url, admin_url, fakes, path)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    for fake in fakes:
        fake.reset()
    assert re.search(r"config reloaded", output), output[-2000:]
    assert_clean("the process output", output)
    for body in bodies:
        assert_clean("a response", body)
