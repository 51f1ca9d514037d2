"""The gateway process: both listeners on one event loop, reload, and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from lm_gateway.api.admin import AdminAPI
from lm_gateway.api.client import ClientAPI
from lm_gateway.api.metrics import track_in_flight
from lm_gateway.backends import Backend
from lm_gateway.config import Config, ConfigError
from lm_gateway.http.server import HttpServer, ServerLimits
from lm_gateway.router.cost import CostLedger
from lm_gateway.state import GatewayState, build_state
from lm_gateway.traffic import TrafficLog

log = logging.getLogger("lm_gateway")

# How long a retired backend adapter (after a reload) keeps its pool for requests still using it.
RETIRE_GRACE_S = 120.0


class Gateway:
    def __init__(self, config: Config, loader: Callable[[], Config] | None = None) -> None:
        self.state: GatewayState = build_state(config)[0]
        self.traffic = TrafficLog(config.gateway.traffic_log_capacity)
        # Cost per tier, profile and client since start (the traffic ring only holds the recent).
        self.costs = CostLedger()
        self.traffic.subscribe(self.costs.record)
        self.started_at = time.time()
        self.client_port = config.gateway.client_port
        self.admin_port = config.gateway.admin_port
        self._loader = loader
        self._client_api = ClientAPI(self)
        self._admin_api = AdminAPI(self)
        self._servers: list[HttpServer] = []
        self._stopped = asyncio.Event()
        self._retire_tasks: set[asyncio.Task[object]] = set()

    def uptime(self) -> float:
        return time.time() - self.started_at

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        gateway = self.state.config.gateway
        limits = ServerLimits(max_body_bytes=gateway.max_body_bytes)
        admin_limits = ServerLimits(max_body_bytes=1024 * 1024)
        client = HttpServer(track_in_flight(self._client_api.handle, self.traffic), limits, loop)
        admin = HttpServer(self._admin_api.handle, admin_limits, loop)
        self.client_port = await client.listen(gateway.client_host, gateway.client_port)
        self._servers.append(client)
        self.admin_port = await admin.listen(gateway.admin_host, gateway.admin_port)
        self._servers.append(admin)
        self._report_startup()

    def _report_startup(self) -> None:
        state = self.state
        gateway = state.config.gateway
        log.info("config loaded from %s", state.config.source)
        log.info(
            "client API on http://%s:%d, admin API on http://%s:%d",
            gateway.client_host,
            self.client_port,
            gateway.admin_host,
            self.admin_port,
        )
        for warning in (*state.config.warnings, *state.table.warnings):
            log.warning("%s", warning)
        for missing in state.config.missing_secrets:
            log.warning("missing secret: %s", missing)
        if state.clients_locked:
            log.error(
                "[[clients]] are configured but none of their keys is set: "
                "the client API refuses every request"
            )
        if state.admin_locked:
            log.error("gateway.admin_token_env names an unset variable: the admin API refuses every request")

    async def reload(self) -> list[str]:
        """Load the config again; on success swap it in, on failure keep the old one and say why."""
        if self._loader is None:
            return ["this gateway runs the embedded default config; there is no file to reload"]
        try:
            config = await asyncio.to_thread(self._loader)
        except ConfigError as err:
            log.error("config reload refused:\n%s", err)
            return list(err.problems)
        state, retired = build_state(config, self.state)
        self.state = state
        self.traffic.resize(config.gateway.traffic_log_capacity)
        old = self._servers[0] if self._servers else None
        if old is not None and (
            config.gateway.client_port not in (0, self.client_port)
            or config.gateway.admin_port not in (0, self.admin_port)
        ):
            log.warning("ports changed in the config; they take effect at the next restart")
        for backend in retired:
            self._retire(backend)
        log.info("config reloaded from %s", config.source)
        return []

    def _reload_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._retire_tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._retire_tasks.discard)

    def _retire(self, backend: Backend) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            await backend.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests and streams finish, then close upstream pools."""
        if drain_timeout is None:
            drain_timeout = self.state.config.gateway.drain_timeout_ms / 1000
        self._admin_api.end_feeds()  # open dashboards must not hold up the drain
        await asyncio.gather(*(server.drain(drain_timeout) for server in self._servers))
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*(b.close() for b in self.state.backends.values()), return_exceptions=True)
        self._stopped.set()

    async def run_forever(self) -> None:
        """After :meth:`start`: serve until SIGTERM/SIGINT, then drain and return. SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
        await stop_requested.wait()
        log.info("shutting down: draining in-flight requests")
        await self.stop()
        log.info("stopped")
