"""The single-file build: ``scripts/build-pyz.sh`` makes ``lm-gateway.pyz`` (once per test session,
from this checkout, with this interpreter), which then serves the demo backend on its own, one
process or two workers, with nothing from this virtualenv or checkout on its path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .gateway import DEMO, free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '[gateway]\nclient_host = "127.0.0.1"\nadmin_host = "127.0.0.1"\n' + textwrap.dedent(DEMO)
CHAT = {"model": "hint:fast", "messages": [{"role": "user", "content": "ping"}]}


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build it the documented way (only PyPI is needed)."""
    output = tmp_path_factory.mktemp("pyz") / "lm-gateway.pyz"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-pyz.sh"), str(output)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.is_file()
    return output


class PyzGateway:
    """``python -I -S lm-gateway.pyz --config ...`` from an empty directory: isolated mode and no
    site-packages, so everything it imports comes out of the .pyz."""

    def __init__(self, pyz: Path, workdir: Path, *args: str) -> None:
        self.client_port, self.admin_port = free_port(), free_port()
        config = workdir / "config.toml"
        config.write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LMG_", "VIRTUAL_ENV"))}
        env |= {
            "SHIV_ROOT": str(workdir / "shiv"),  # where the dependencies are unpacked on first run
            "LMG_CLIENT_PORT": str(self.client_port),
            "LMG_ADMIN_PORT": str(self.admin_port),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(pyz), "--config", str(config), *args],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60  # the first run unpacks the dependencies
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:  # the client port (the workers') and the admin port (the supervisor's)
                urls = (self.url + "/healthz", self.admin + "/admin/health")
                if all(httpx.get(url, timeout=1).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"not ready:\n{self.output()}")

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=10)[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def run_pyz(pyz: Path, tmp_path: Path) -> Iterator[list[PyzGateway]]:
    started: list[PyzGateway] = []
    yield started
    for gateway in started:
        gateway.kill()


@pytest.mark.timeout(600)
def test_the_pyz_is_built_for_this_python(pyz: Path) -> None:
    shebang = pyz.read_bytes().split(b"\n", 1)[0].decode()
    assert shebang == f"#!/usr/bin/env python{sys.version_info.major}.{sys.version_info.minor}"
    version = subprocess.run(
        [sys.executable, "-I", "-S", str(pyz), "--version"],
        env={**os.environ, "SHIV_ROOT": str(pyz.parent / "shiv")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and version.stdout.startswith("lm-gateway "), version.stderr


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [1, 2])
def test_the_pyz_serves_the_demo_backend(
    pyz: Path, tmp_path: Path, run_pyz: list[PyzGateway], workers: int
) -> None:
    gateway = PyzGateway(pyz, tmp_path, "--workers", str(workers))
    run_pyz.append(gateway)
    gateway.wait_ready()
    for _ in range(6):
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert reply.status_code == 200 and "demo backend" in reply.text
    stream = httpx.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10)
    assert stream.text.rstrip().endswith("data: [DONE]")
    deadline = time.monotonic() + 10
    while httpx.get(gateway.admin + "/admin/traffic").json()["stats"]["total_requests"] < 7:
        assert time.monotonic() < deadline, "the traffic log did not count every request"
        time.sleep(0.05)
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(20) == 0
    log = gateway.output()
    assert f"config loaded from {tmp_path}/config.toml" in log
    if workers > 1:
        assert "2 workers serving the client port" in log and log.count("exited (exit code 0)") == 2
