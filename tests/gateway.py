"""Run a real gateway for a test: its own event loop in a background thread, real sockets, port 0.

Tests talk to it over HTTP exactly as a client would (the official SDKs, httpx, raw sockets). The
config is TOML text, as a user would write it; ports are forced to 0 and hosts to loopback.
"""

from __future__ import annotations

import json
import socket
import textwrap
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lm_gateway.config import load_config
from lm_gateway.server import Gateway

from .fakes.threaded import ServerThread

LISTEN = '[gateway]\nclient_port = 0\nadmin_port = 0\nclient_host = "127.0.0.1"\nadmin_host = "127.0.0.1"\n'


class RunningGateway:
    def __init__(self, config_path: Path, env: Mapping[str, str]) -> None:
        self.config_path = config_path
        self.env = dict(env)
        config = load_config(config_path, env=self.env)
        self.gateway = Gateway(config, loader=lambda: load_config(config_path, env=self.env))
        self.thread = ServerThread(start=self.gateway.start, stop=self.gateway.stop, name="gateway")

    def start(self) -> RunningGateway:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.thread.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.client_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.admin_port}"

    def admin_get(self, path: str, token: str | None = None) -> Any:
        request = urllib.request.Request(self.admin_url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def traffic(self, limit: int = 100) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.admin_get(f"/admin/traffic?limit={limit}")["entries"]
        return entries


# A ladder served by the built-in demo backend: the gateway answers without any upstream.
DEMO = """
    [backends.demo]
    provider = "demo"
    base_url = "http://demo.invalid"

    [[tiers]]
    name = "local:demo"
    backend = "demo"
    model = "demo"

    [aliases]
    "hint:fast" = "local:demo"

    [profiles.default]
    mode = "dispatch"
    classifier = "local:demo"
    """


def free_port() -> int:
    """A port free right now on loopback (for processes that must be told their port up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(body: str, *, gateway_extra: str = "") -> str:
    """A config: the loopback/port-0 ``[gateway]`` header, extra gateway keys, then ``body``."""
    return LISTEN + textwrap.dedent(gateway_extra) + "\n" + textwrap.dedent(body)


def openai_backend_config(url: str, *, name: str = "mock", extra: str = "") -> str:
    """One OpenAI-compatible backend with a two-tier ladder and the usual aliases."""
    return f"""
        [backends.{name}]
        base_url = "{url}"
        provider = "openai"
        {extra}

        [[tiers]]
        name = "local:fast"
        backend = "{name}"
        model = "fast-model"

        [[tiers]]
        name = "cloud:economy"
        backend = "{name}"
        model = "economy-model"

        [aliases]
        "hint:fast" = "local:fast"
        "hint:cloud" = "cloud:economy"

        [profiles.default]
        mode = "dispatch"
        classifier = "local:fast"
        """


# Besides the OpenAI ladder of ``openai_backend_config``: a tier on an Anthropic and one on an Ollama
# upstream (so requests are translated towards those protocols too), and one keyed client.
OTHER_PROTOCOL_TIERS = """
[backends.an]
provider = "anthropic"
base_url = "{anthropic}"
api_key_env = "AN_KEY"

[backends.ol]
provider = "ollama"
base_url = "{ollama}"

[[tiers]]
name = "t:an"
backend = "an"
model = "claude-fake"

[[tiers]]
name = "t:ol"
backend = "ol"
model = "llama-fake"

[[clients]]
name = "fuzzer"
key_env = "FUZZ_KEY"
profile = "default"
"""


def three_protocol_config(openai_url: str, anthropic_url: str, ollama_url: str) -> str:
    """The OpenAI ladder plus an Anthropic and an Ollama tier and a client keyed by ``FUZZ_KEY``."""
    return openai_backend_config(openai_url) + OTHER_PROTOCOL_TIERS.format(
        anthropic=anthropic_url, ollama=ollama_url
    )


@contextmanager
def three_protocol_gateway(
    directory: Path, gateway_extra: str, env: Mapping[str, str]
) -> Iterator[RunningGateway]:
    """A gateway in front of one fake upstream per protocol (see :func:`three_protocol_config`)."""
    from .fakes.anthropic_backend import AnthropicBackend
    from .fakes.ollama_backend import OllamaBackend
    from .fakes.openai_backend import OpenAIBackend

    with OpenAIBackend() as fake, AnthropicBackend() as anthropic, OllamaBackend() as ollama:
        path = directory / "config.toml"
        body = three_protocol_config(fake.url, anthropic.url, ollama.url)
        path.write_text(config_text(body, gateway_extra=gateway_extra))
        gateway = RunningGateway(path, env).start()
        try:
            yield gateway
        finally:
            gateway.stop()


def admin_token_gateway(start_gateway: Callable[..., RunningGateway], url: str, token: str) -> RunningGateway:
    """A gateway on one OpenAI backend whose admin side wants ``token`` (read from the environment,
    as a deployment would give it)."""
    return start_gateway(
        openai_backend_config(url),
        env={"ADMIN_TOKEN": token},
        gateway_extra='admin_token_env = "ADMIN_TOKEN"\n',
    )
