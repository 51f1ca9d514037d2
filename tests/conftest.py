"""Fixtures shared by the socket-level tests: a gateway factory that cleans up after itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .gateway import RunningGateway, config_text

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
