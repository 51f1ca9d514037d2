"""A real Redis server for the cluster tests: Debian's ``redis-server`` on a free loopback port.

No persistence (a killed server comes back empty, like a fresh Redis after a crash) and a password,
so the tests also prove the password never shows anywhere.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .gateway import free_port

PASSWORD = "redis-canary-pass-93d1"


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
        args = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", PASSWORD]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_serving()
        return self

    def _wait_until_serving(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                    if b"PONG" in sock.recv(64) or b"PONG" in sock.recv(64):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        self.kill()
