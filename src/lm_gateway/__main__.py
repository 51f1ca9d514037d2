"""Command line: ``lm-gateway [serve] [--config PATH] [--workers N]``, ``lm-gateway check``,
``--healthcheck``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lm_gateway import __version__

if TYPE_CHECKING:
    from lm_gateway.config.schema import Config


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.healthcheck:
        raise SystemExit(_healthcheck())
    if args.command == "check":
        raise SystemExit(_check(args.config))
    raise SystemExit(_serve(args.config, args.workers))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lm-gateway", description="A small, fast LLM routing gateway.")
    parser.add_argument("--version", action="version", version=f"lm-gateway {__version__}")
    parser.add_argument(
        "--healthcheck",
        action="store_true",
        help="GET /healthz on 127.0.0.1:$LMG_CLIENT_PORT (default 8080); exit 0 when healthy",
    )
    parser.add_argument("--config", help="config file (else $LMG_CONFIG, else /etc/lm-gateway/config.toml)")
    parser.add_argument(
        "--workers",
        type=_workers,
        default=os.environ.get("LMG_WORKERS") or "1",  # a string default goes through type=
        help="worker processes serving the client port ('auto': one per usable core; else $LMG_WORKERS, "
        "else 1); see lm_gateway/workers.py",
    )
    sub = parser.add_subparsers(dest="command")
    for name, text in (
        ("serve", "run the gateway (the default)"),
        ("check", "validate the config and show it"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", dest="config", default=argparse.SUPPRESS, help="config file")
        if name == "serve":
            command.add_argument("--workers", type=_workers, default=argparse.SUPPRESS, help="see above")
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "serve"
    return args


def _workers(raw: str) -> int:
    """``--workers``: a count from 1 up, or ``auto`` for one per core this process may run on."""
    if raw.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not raw.strip().isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of processes (1 or more) or 'auto', got {raw!r}")
    return int(raw)


def _healthcheck() -> int:
    """For container health checks: no config load, no logging, stdlib only."""
    import urllib.request

    port = os.environ.get("LMG_CLIENT_PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except OSError:
        return 1


def _check(cli_path: str | None) -> int:
    from lm_gateway.config import ConfigError, find_config_path, load_config
    from lm_gateway.router import build_table

    try:
        config = load_config(find_config_path(cli_path, os.environ))
    except ConfigError as err:
        print(f"config is invalid:\n{err}", file=sys.stderr)
        return 1
    table = build_table(config)
    print(f"config: {config.source}")
    print("tiers (cheapest first):")
    for index, tier in enumerate(config.tiers):
        print(f"  {index}. {tier.name:<24} backend={tier.backend:<14} model={tier.model}")
    print("aliases:")
    for alias, target in config.aliases.items():
        print(f"  {alias:<24} -> {target}")
    print("profiles:")
    for name, profile in config.profiles.items():
        ceiling = profile.max_auto_tier or "(none)"
        print(f"  {name:<24} mode={profile.mode} classifier={profile.classifier or '-'} ceiling={ceiling}")
    print("clients:")
    resolved = {id(client) for client, _ in config.client_keys}
    for client in config.clients:
        present = "key set" if id(client) in resolved else "KEY MISSING"
        print(f"  {client.display_name:<24} profile={client.profile} ({present}, from ${client.key_env})")
    print("backends:")
    for name, backend in config.backends.items():
        source = backend.key_source
        key = (
            "no key" if source is None else ("key present" if name in config.backend_keys else "KEY MISSING")
        )
        where = f" ({source.describe()})" if source is not None else ""
        print(f"  {name:<24} provider={backend.provider} url={backend.base_url} {key}{where}")
    redis_source = config.gateway.redis_url
    if redis_source is None:
        print("shared state: none (each instance keeps its own)")
    else:
        present = (
            "URL present" if config.redis_url is not None else "URL MISSING: each instance keeps its own"
        )
        print(
            f"shared state: Redis, key prefix {config.gateway.redis_prefix} "
            f"({present}, {redis_source.describe()})"
        )
    for warning in (*config.warnings, *table.warnings):
        print(f"warning: {warning}")
    for missing in config.missing_secrets:
        print(f"missing secret: {missing}")
    return 0


def _serve(cli_path: str | None, workers: int = 1) -> int:
    started = time.perf_counter()
    from lm_gateway.config import ConfigError, find_config_path, load_config

    env_level = os.environ.get("LMG_LOG_LEVEL")
    _setup_logging(env_level or "info")
    log = logging.getLogger("lm_gateway")
    try:
        path = find_config_path(cli_path, os.environ)
        config = load_config(path)
    except ConfigError as err:
        log.error("cannot start, the config is invalid:\n%s", err)
        return 2
    if config.gateway.log_level and not env_level:
        logging.getLogger().setLevel(config.gateway.log_level.upper())
    try:
        config = _with_port_overrides(config, os.environ)
    except ValueError as err:
        log.error("cannot start: %s", err)
        return 2

    from lm_gateway.server import Gateway

    # A reload applies the same port overrides (else it would see the ports as changed).
    loader = (lambda: _with_port_overrides(load_config(path), os.environ)) if path is not None else None
    _install_uvloop()
    if workers > 1:  # a supervisor with the admin port, and N worker processes on the client port
        from lm_gateway.workers import Supervisor

        gateway: Gateway = Supervisor(config, loader, workers, path)
    else:
        gateway = Gateway(config, loader)

    async def run() -> None:
        await gateway.start()
        log.info("lm-gateway %s ready in %.0f ms", __version__, (time.perf_counter() - started) * 1000)
        await gateway.run_forever()

    from lm_gateway.tracing import TracingUnavailable

    try:
        asyncio.run(run())
    except (OSError, TracingUnavailable) as err:
        log.error("cannot start: %s", err)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _with_port_overrides(config: Config, env: Mapping[str, str]) -> Config:
    """``LMG_CLIENT_PORT`` / ``LMG_ADMIN_PORT`` win over the config (containers map ports this way,
    and ``--healthcheck`` reads the same variable)."""
    changes: dict[str, Any] = {}
    for var, key in (("LMG_CLIENT_PORT", "client_port"), ("LMG_ADMIN_PORT", "admin_port")):
        raw = env.get(var)
        if raw:
            if not raw.isdigit() or int(raw) > 65535:
                raise ValueError(f"{var} must be a port number, got {raw!r}")
            changes[key] = int(raw)
    if not changes:
        return config
    return dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, **changes))


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LMG_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


if __name__ == "__main__":
    main()
