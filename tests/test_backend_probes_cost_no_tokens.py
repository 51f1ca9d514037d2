"""Health probes of the Anthropic and Ollama backends list models and never ask for a generation:
Anthropic ``GET /v1/models`` (with the gateway's key and ``anthropic-version``), Ollama ``GET /api/tags``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import StartGateway
from .cross_protocol import ANTHROPIC_KEY, ENV, Fakes, fakes_fixture
from .gateway import RunningGateway


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def probe(gw: RunningGateway, backend: str) -> tuple[int, dict[str, Any]]:
    resp = httpx.get(gw.admin_url + "/admin/backends/health", params={"backend": backend}, timeout=10)
    item: dict[str, Any] = resp.json()["backends"][0]
    return resp.status_code, item


def test_anthropic_probe_lists_models_with_the_gateway_key(gw: RunningGateway, fakes: Fakes) -> None:
    status, item = probe(gw, "claude")
    assert status == 200 and item["status"] == "ok" and item["provider"] == "anthropic"
    assert item["models"] == list(fakes.anthropic.models)
    probes = fakes.anthropic.requests_to("/v1/models")
    assert probes and probes[-1].method == "GET"
    assert probes[-1].header("x-api-key") == ANTHROPIC_KEY and probes[-1].header("anthropic-version")
    assert fakes.anthropic.requests_to("/v1/messages") == []  # no tokens spent


def test_anthropic_probe_reports_a_refused_key(start_gateway: StartGateway, fakes: Fakes) -> None:
    fakes.reset()
    gw = start_gateway(fakes.config(), env={"ANTHROPIC_KEY": "sk-ant-revoked"})
    status, item = probe(gw, "claude")
    assert status == 207 and item["status"] == "unreachable" and "401" in item["error"]
    assert "sk-ant-revoked" not in str(item)


def test_ollama_probe_lists_installed_models(gw: RunningGateway, fakes: Fakes) -> None:
    status, item = probe(gw, "ollama")
    assert status == 200 and item["status"] == "ok" and item["models"] == list(fakes.ollama.models)
    assert fakes.ollama.requests_to("/api/tags")
    assert fakes.ollama.requests_to("/api/chat") == [] and fakes.ollama.requests_to("/api/generate") == []
