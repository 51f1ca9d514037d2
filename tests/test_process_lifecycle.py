"""The ``lm-gateway`` process: embedded default, ``check``, ``--healthcheck``, JSON logs, and a
SIGTERM that lets an in-flight stream finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .fakes.openai_backend import OpenAIBackend
from .fakes.script import Stream
from .gateway import config_text, free_port, openai_backend_config


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lm_gateway", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


class GatewayProcess:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.client_port, self.admin_port = free_port(), free_port()
        inherited = {k: v for k, v in os.environ.items() if k != "LMG_CONFIG"}  # the test decides the config
        ports = {"LMG_CLIENT_PORT": str(self.client_port), "LMG_ADMIN_PORT": str(self.admin_port)}
        full_env = {**inherited, **env, **ports}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lm_gateway", *args],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.client_port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("gateway did not become ready")

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.stop()


def write_config(tmp_path: Path, body: str, **extra: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_text(body, gateway_extra="".join(f"{k} = {v}\n" for k, v in extra.items())))
    return path


def test_embedded_default_serves_the_demo_backend_without_any_llm(processes: list[GatewayProcess]) -> None:
    gw = GatewayProcess([], {})
    processes.append(gw)
    body = {"model": "hint:fast", "messages": [{"role": "user", "content": "ping"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert "demo backend" in resp.json()["choices"][0]["message"]["content"]
    stream = httpx.post(gw.url + "/v1/chat/completions", json={**body, "stream": True})
    assert stream.text.rstrip().endswith("data: [DONE]")
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert "embedded default" in gw.output()


def test_sigterm_lets_an_in_flight_stream_finish_then_exits_zero(
    tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    with OpenAIBackend() as fake:
        fake.script(Stream(chunks=[f"c{i} " for i in range(8)], delay=0.15))
        gw = GatewayProcess(
            ["serve", "--config", str(write_config(tmp_path, openai_backend_config(fake.url)))], {}
        )
        processes.append(gw)
        received: list[str] = []
        first_chunk = threading.Event()

        def consume() -> None:
            body = {"model": "hint:fast", "stream": True, "messages": [{"role": "user", "content": "q"}]}
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=20) as resp:
                for line in resp.iter_lines():
                    received.append(line)
                    if '"c0 "' in line:
                        first_chunk.set()

        reader = threading.Thread(target=consume)
        reader.start()
        assert first_chunk.wait(10)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):  # no longer accepting new connections
            httpx.get(gw.url + "/healthz", timeout=1)
        reader.join(20)
        assert gw.proc.wait(15) == 0
    assert received[-1] == "data: [DONE]" or received[-2:] == ["data: [DONE]", ""]
    text = "".join(received)
    assert all(f"c{i} " in text for i in range(8))


def test_check_prints_the_ladder_and_names_missing_secrets_without_values(tmp_path: Path) -> None:
    body = openai_backend_config("http://127.0.0.1:9", extra='api_key_env = "CHECK_KEY"')
    path = write_config(tmp_path, body)
    missing = cli("check", "--config", str(path), env={"CHECK_KEY": ""})
    assert missing.returncode == 0, missing.stderr
    assert "local:fast" in missing.stdout and "hint:fast" in missing.stdout
    assert "CHECK_KEY" in missing.stdout and "KEY MISSING" in missing.stdout
    present = cli("check", "--config", str(path), env={"CHECK_KEY": "sk-check-canary"})
    assert "key present" in present.stdout and "sk-check-canary" not in present.stdout + present.stderr


def test_check_says_whether_state_is_shared_without_showing_the_redis_url(tmp_path: Path) -> None:
    plain = cli("check", "--config", str(write_config(tmp_path, openai_backend_config("http://127.0.0.1:9"))))
    assert "shared state: none" in plain.stdout
    source = '{ source = "env", var = "CHECK_REDIS" }'
    path = write_config(tmp_path, openai_backend_config("http://127.0.0.1:9"), redis_url=source)
    missing = cli("check", "--config", str(path), env={"CHECK_REDIS": ""})
    assert "URL MISSING" in missing.stdout and "env $CHECK_REDIS" in missing.stdout
    url = "redis://:canary-redis-pw@10.0.0.9:6379/0"
    present = cli("check", "--config", str(path), env={"CHECK_REDIS": url})
    assert "shared state: Redis, key prefix lmg (URL present" in present.stdout
    assert "canary-redis-pw" not in present.stdout + present.stderr


def test_check_lists_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    body = """
        [backends.ollama]
        base_url = "ftp://nowhere"
        [[tiers]]
        name = "a"
        backend = "olama"
        model = "m"
        [[tiers]]
        name = "a"
        backend = "ollama"
        model = "m"
        [aliases]
        "hint:fast" = "missing-tier"
        """
    result = cli("check", "--config", str(write_config(tmp_path, body, traffic_log_capacity="0")))
    assert result.returncode != 0
    for fragment in ("olama", "missing-tier", "traffic_log_capacity", "base_url", "duplicate"):
        assert fragment in result.stderr.lower() or fragment in result.stderr, fragment


def test_an_explicit_config_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    result = cli("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode != 0
    assert "nope.toml" in result.stderr


def test_healthcheck_exit_code_follows_healthz(processes: list[GatewayProcess]) -> None:
    down = cli("--healthcheck", env={"LMG_CLIENT_PORT": str(free_port())})
    assert down.returncode == 1
    gw = GatewayProcess([], {})
    processes.append(gw)
    up = cli("--healthcheck", env={"LMG_CLIENT_PORT": str(gw.client_port)})
    assert up.returncode == 0


def test_json_logs_are_one_object_per_line(tmp_path: Path, processes: list[GatewayProcess]) -> None:
    gw = GatewayProcess([], {"LMG_LOG_FORMAT": "json"})
    processes.append(gw)
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(10)
    lines = [line for line in gw.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("ready in" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
