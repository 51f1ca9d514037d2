"""What is measured: direct-to-mock (the floor), the bare aiohttp proxy (the reference), lm-gateway.

A target is a command line built from a :class:`LaunchContext` (the upstream URL to use and the
free ports chosen for it). ``direct`` has no command: its requests go straight to the mock, and the
mock's own start time and RSS fill its column, which shows the harness's floor.

lm-gateway is started as ``python -m lm_gateway serve --config PATH`` with a config written here
(or from ``--gateway-config``, a TOML template with ``$client_port``, ``$admin_port`` and
``$upstream_url``), and ``LMG_CONFIG`` set to the same path. ``--gateway-cmd`` replaces the command
(a template with ``{python}``, ``{config}``, ``{port}``). ``src/`` is put first on ``PYTHONPATH`` so
that the working tree is measured, whatever is installed.
"""

from __future__ import annotations

import os
import shlex
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import REPO_ROOT

GATEWAY_CONFIG = """\
# Written by bench/ for one run.
[gateway]
client_host = "127.0.0.1"
client_port = $client_port
admin_host = "127.0.0.1"
admin_port = $admin_port
traffic_log_capacity = 500

# max_connections: 512 concurrent streams (slow512) need 512 pooled upstream connections; with the
# default (256) half of them would wait for a free one. Both backends have a key, as cloud backends do:
# the gateway then sends it and scrubs it from every answer on every path, passthrough included.
[backends.mock]
base_url = "$upstream_url"
provider = "openai"
api_key_env = "LMG_BENCH_KEY"
max_connections = 1024

# The same mock, spoken to in the Anthropic Messages API (the translation scenarios).
[backends.mock_anthropic]
base_url = "$upstream_url"
provider = "anthropic"
api_key_env = "LMG_BENCH_KEY"
max_connections = 1024

[[tiers]]
name = "local:fast"
backend = "mock"
model = "mock-model"

[[tiers]]
name = "cloud:claude"
backend = "mock_anthropic"
model = "mock-claude"

[aliases]
"hint:fast" = "local:fast"
"hint:claude" = "cloud:claude"

[profiles.default]
mode = "dispatch"
classifier = "local:fast"
"""


BENCH_KEY = "bench-not-a-secret"  # what both mock backends are sent as their key (never checked)


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """Where one instance of a target must listen and what it must forward to."""

    instance: str  # e.g. "gateway-fast": names the log and config files
    upstream_url: str
    port: int  # the client port the load is sent to
    admin_port: int  # a second free port, for targets that have one
    workdir: Path


@dataclass(frozen=True, slots=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    title: str
    launch: Callable[[LaunchContext], Launch] | None  # None: straight to the mock
    model: str = "hint:fast"  # the "model" of the requests sent to it
    start_timeout_s: float = 15.0


def _pythonpath() -> dict[str, str]:
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _bare(ctx: LaunchContext) -> Launch:
    argv = [sys.executable, "-m", "bench.bare_proxy", "--port", str(ctx.port), "--upstream", ctx.upstream_url]
    return Launch(argv, _pythonpath())


def gateway_launcher(
    command: str | None = None, config_template: Path | None = None
) -> Callable[[LaunchContext], Launch]:
    """The lm-gateway launcher, optionally with another command line or config template."""
    template = string.Template(config_template.read_text() if config_template else GATEWAY_CONFIG)

    def launch(ctx: LaunchContext) -> Launch:
        config = ctx.workdir / f"{ctx.instance}.toml"
        config.write_text(
            template.substitute(
                client_port=ctx.port, admin_port=ctx.admin_port, upstream_url=ctx.upstream_url
            )
        )
        if command:
            argv = shlex.split(command.format(python=sys.executable, config=config, port=ctx.port))
        else:
            argv = [sys.executable, "-m", "lm_gateway", "serve", "--config", str(config)]
        env = {**_pythonpath(), "LMG_CONFIG": str(config), "LMG_BENCH_KEY": BENCH_KEY}
        return Launch(argv, env)

    return launch


def build_targets(gateway_cmd: str | None = None, gateway_config: Path | None = None) -> dict[str, Target]:
    """All targets, in table order."""
    return {
        "direct": Target("direct", "direct (mock)", None),
        "bare": Target("bare", "bare aiohttp proxy", _bare, start_timeout_s=10.0),
        "gateway": Target("gateway", "lm-gateway", gateway_launcher(gateway_cmd, gateway_config)),
    }
